"""Trials stored by an earlier version of the code, found again under their current keys.

    python -m pipeline.migrate --grid config/grids/table1.yaml --results results [--configfile config/quick.yaml] [--apply]
    python -m pipeline.migrate --reference table2      # a committed reference, reports/reference/table2/

A trial's key digests the settings that decide its result (``Trial.identity``). Earlier versions
digested every field of the trial instead, so their keys differ: this module knows those formulas
(``LEGACY``), matches a store's trial folders to the trials of the current grid, and renames them
(``GridStore.rekey``: logged first, then folders, records, the last sweep's summary and the results
table; an interrupted rename completes on the next run). Without ``--apply`` it only says what it
would rename. A sweep does the same by itself before it plans (``upgrade``), so an upgrade of the
code retrains nothing.

A folder with a record is rekeyed from the settings its record states; one without (a checkpoint,
an old reference's arrays) only where the grid's trials, under the settings given, include one that
an earlier version named so. Anything else is refused, naming the folder and the settings that
tell it from the grid's nearest trial: nothing is guessed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.files import atomic, locked
from pipeline.reference import PROVENANCE, ROOT, facts_of, trials_of
from pipeline.store import GridStore
from pipeline.trial import Trial, digest


def _every_field(trial: Trial, dropped_train: tuple[str, ...] = ()) -> str:
    whole = {k: v for k, v in trial.to_dict().items() if k != "shown"}
    return digest(whole | {"train": {k: v for k, v in whole["train"].items() if k not in dropped_train}})


#: The key formulas of earlier versions, newest first: a digest of every field of the trial (its
#: labels aside), and before the learning curves, the same without ``curve_per_decade``.
LEGACY = {
    "every field": _every_field,
    "every field, before learning curves": lambda t: _every_field(t, ("curve_per_decade",)),
}


def legacy_keys(trial: Trial) -> list[str]:
    """The keys earlier versions gave ``trial``."""
    slug = trial.key.rsplit("-", 1)[0]
    return [f"{slug}-{formula(trial)}" for formula in LEGACY.values()]


class Unmatched(ValueError):
    """Trial folders that no current key, record or earlier key of the grid's trials accounts for."""


def plan(store: GridStore, trials: list[Trial], strict: bool = True) -> dict[str, str]:
    """Old folder name -> current key, for every trial folder of ``store`` not named by its current key.

    A folder with a record: its record's trial's key. Otherwise: the grid trial (of ``trials``) that an
    earlier version named so. ``strict``: Unmatched for any other folder (else they are left alone, as a
    sweep leaves the folders of another budget's unfinished trials).
    """
    by_old = {old: t.key for t in trials for old in legacy_keys(t)}
    current = {t.key for t in trials}
    renames, unmatched = {}, []
    for name in store.trial_keys():
        if (store.folder(name) / "record.json").is_file():
            try:
                key = store.record(name).trial.key
            except ValueError:  # damaged: left where it is, for the sweep to name before its compute
                if strict:
                    raise
                continue
        else:
            key = name if name in current else by_old.get(name)
        if key is None:
            unmatched.append(name)
        elif key != name:
            renames[name] = key
    if unmatched and strict:
        raise Unmatched("; ".join(_why(store, name, trials) for name in unmatched))
    return renames


def _why(store: GridStore, name: str, trials: list[Trial]) -> str:
    """Why folder ``name`` matches none of ``trials``: the settings its checkpoint states that differ."""
    where = f"{store.folder(name)}: no trial of grid {store.grid} under these settings had this key in any version"
    slug = name.rsplit("-", 1)[0]
    same_model = [t for t in trials if t.key.rsplit("-", 1)[0] == slug]
    if not same_model:
        return f"{where} (the grid has no model {slug!r})"
    path = store.checkpoint(name) if store.checkpoint(name).is_file() else store.final_state(name)
    if not path.is_file():
        return f"{where}, and it holds no record or checkpoint that states its settings (give the profile it was trained under)"
    from icstn import checkpoint, models
    from pipeline.runner import train_config

    state = checkpoint.read(path, remedy="delete it")
    nearest = same_model[0]
    model_cfg = models.get_config(nearest.experiment, nearest.model, nearest.init)
    wanted = checkpoint.identity(model_cfg, train_config(nearest, cuda_graph=False), nearest.seeds, nearest.sigma_px)
    differ = [f"{k}={stored!r} (the grid: {want!r})" for k, (stored, want) in checkpoint.differences(state, wanted).items()]
    return f"{where}; it differs from the grid's {nearest.key} in {', '.join(differ) or 'a setting its checkpoint does not state'}"


def upgrade(store: GridStore, trials: list[Trial]) -> dict[str, str]:
    """Rename the store's trials named by an earlier version's keys (what a sweep does before it plans);
    returns the renames. Folders it cannot match are left as they are."""
    if not store.root.is_dir():
        return {}
    with locked(store.root / ".rekey.lock"):  # another sweep process of the store may be upgrading it too
        renames = plan(store, trials, strict=False)
        store.rekey(renames)
    return renames


def reference(grid: str, root: str | Path = ROOT, config: str | Path = "config") -> dict[str, str]:
    """Rename a committed reference's trials stored under an earlier version's keys, in its store, its table
    and its provenance (``pipeline.reference``); returns the renames. Unmatched for a trial that no trial of
    the grid, as the reference's runs trained it, accounts for."""
    folder = Path(root) / grid
    store = GridStore(folder, grid)
    renames = plan(store, trials_of(grid, root, config))
    store.rekey(renames)
    facts = facts_of(grid, root)
    if facts is not None and renames:
        facts["trials"] = {renames.get(k, k): v for k, v in facts["trials"].items()}
        with atomic(folder / PROVENANCE) as tmp:
            tmp.write_text(json.dumps(facts, indent=1))
    return renames


def main(argv: list[str] | None = None) -> int:
    from pipeline import grids, schema, settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", help="the grid file whose trials the store holds")
    parser.add_argument("--results", help="the results folder (the store is <results>/<grid>/)")
    parser.add_argument("--reference", metavar="GRID", help=f"instead: the committed reference {ROOT}/GRID/ (renamed at once)")
    parser.add_argument("--configfile", default=None, help="the profile the trials were trained under (default: the paper profile)")
    parser.add_argument("--settings", default={}, type=settings.json_object, help="settings over the profile, JSON")
    parser.add_argument("--apply", action="store_true", help="rename (without it: say what would be renamed, change nothing)")
    args = parser.parse_args(argv)
    if args.reference is None and not (args.grid and args.results):
        parser.error("give --grid and --results, or --reference GRID")
    try:
        if args.reference is not None:
            renames = reference(args.reference)
            print(f"{args.reference}: {len(renames)} trials of its reference renamed to their current keys", file=sys.stderr)
            return 0
        profile = schema.read_yaml(args.configfile, what="profile file") if args.configfile else {}
        config = settings.resolve(settings.merge(profile, args.settings))
        grid = grids.load_grid(args.grid, config["budget"])
        trials = grids.expand(grid, settings.models_per_trial(config["pack"], config["device"]))
        store = GridStore(args.results, grid.name)
        renames = plan(store, trials)
        for old, new in renames.items():
            print(f"  {old} -> {new}")
        verb = "renamed" if args.apply else "to rename (run again with --apply)"
        print(f"{grid.name}: {len(renames)} of {len(store.trial_keys())} trials {verb}", file=sys.stderr)
        if args.apply:
            store.rekey(renames)
    except (grids.GridError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
