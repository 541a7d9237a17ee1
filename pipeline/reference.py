"""A reference: one grid of the paper profile, grown by any number of runs on GPU machines or CPUs, committed.

    python -m pipeline.reference plan --grid table1 table2 table3 --seeds 3 5
    python -m pipeline.reference prepare --grid table2 --work WORK --seeds 5 [--extra JSON]
    python -m pipeline.reference restore --grid table2 --results WORK/results [--reference reports/reference] [--kind CPU]
    python -m pipeline.reference pack --results WORK/results --grid table2 --out table2.tar.gz [--seconds S] [--goal N]
    python -m pipeline.reference unpack table2.tar.gz [--into reports/reference]

A grid is one of config/grids (by name) or a grid file: ``config/references/`` holds grids that only
references train. A GPU machine's reference of a grid is ``reports/reference/<grid>/``, a CPU's
``reports/reference/<grid>-cpu/`` (``folder``): both are results folders (``pipeline.store``) kept small:

    <grid>.parquet          the results table of the finished trials (none until one finishes)
    provenance.json         its kind (GPU or CPU), the grid's budget, every trial's step, and one entry
                            per run that grew it (device, cores, processes, threads)
    <grid>/trials/<key>/    what ``pipeline.reference_keep`` keeps of each trial: its record, the state a
                            run continues, the arrays a figure draws. No per-member copies, no Ray or MLflow records.

``prepare`` bounds the reference's size before any compute (``reference_keep.estimate``), and
refuses a grid whose reference could exceed its cap, naming the seeds that fit. A run
(``benchmarks/reference_run.sh GRID MINUTES``) restores the committed reference as the results
folder of a sweep, runs the sweep for MINUTES (its time limit: every trial checkpoints and stops),
and packs the folder back into one archive, its run's provenance appended; ``unpack`` lays that out
in a checkout, whole or not at all. Every report renders a reference as a column "reference (GPU)"
or "reference (CPU)" beside the paper's and this run's, and says how far it has got (``progress``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pandas as pd
import pyarrow

from pipeline import provenance, results, schema
from pipeline import reference_keep as keep
from pipeline.files import atomic
from pipeline.settings import json_object
from pipeline.store import GridStore

MAX_BYTES = keep.CAP  # the cap of most grids (``reference_keep.cap``)
ROOT = Path("reports/reference")
PROVENANCE = "provenance.json"
PLAN = "plan.json"
KINDS = ("GPU", "CPU")  # where a reference trains: each kind has its own folder and column


def folder(grid: str, root: str | Path = ROOT, kind: str = "GPU") -> Path:
    """Where the ``kind`` reference of ``grid`` lives: ``<root>/<grid>`` (GPU) or ``<root>/<grid>-cpu``."""
    if kind not in KINDS:
        raise ValueError(f"a reference's kind is one of {list(KINDS)}, got {kind!r}")
    return Path(root) / (grid if kind == "GPU" else f"{grid}-{kind.lower()}")


def kind_here() -> str:
    """The kind of reference this machine grows: GPU where torch sees one, else CPU."""
    import torch

    return "GPU" if torch.cuda.is_available() else "CPU"


def grid_file(grid: str | Path, config: str | Path = "config") -> Path:
    """A grid by name (``config/grids/<name>.yaml``) or by its file (e.g. ``config/references/table2.yaml``)."""
    path = Path(grid) if str(grid).endswith((".yaml", ".yml")) else Path(config) / "grids" / f"{grid}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no grid {grid}: {path} does not exist (a name of config/grids, or a grid file)")
    return path


def prepare(grid: str, work: str | Path, seeds: int, extra: dict | None = None, config: str | Path = "config") -> str:
    """Write ``<work>/grids/<grid>.yaml`` (seeds 0..seeds-1: a profile's budget only lowers seeds),
    ``<work>/settings.json`` (the paper profile, inline, untracked, and ``extra`` over it) and
    ``<work>/plan.json`` (the reference's goal and size bound); returns the grid's experiment.
    ValueError, before any compute, where the reference could exceed its cap, naming the seeds that fit."""
    import yaml

    work, config = Path(work), Path(config)
    source = grid_file(grid, config)
    spec = yaml.safe_load(source.read_text())
    spec["seeds"] = list(range(seeds))
    path = work / "grids" / f"{source.stem}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    settings = yaml.safe_load((config / "config.yaml").read_text()) | {"executor": "inline", "tracking": {"enabled": False}}
    settings |= {**(extra or {}), "grids": str(work / "grids")}
    (work / "settings.json").write_text(json.dumps(settings))
    bound = size_bound(path, settings)
    if bound.total > keep.cap(bound.grid):
        fit = [n for n in range(seeds - 1, 0, -1) if size_bound(path, settings, n).total <= keep.cap(bound.grid)]
        raise ValueError(
            f"{bound.line()}: over its cap; " + (f"at most {fit[0]} seeds fit (SEEDS={fit[0]})" if fit else "no number of seeds fits")
        )
    plan = {
        "grid": bound.grid,
        "experiment": spec["experiment"],
        "goal": spec["iterations"],
        "bound_bytes": bound.total,
        "cap_bytes": keep.cap(bound.grid),
    }
    (work / PLAN).write_text(json.dumps(plan, indent=1))
    print(bound.line(), file=sys.stderr)
    return spec["experiment"]


def size_bound(grid_path: Path, settings: dict, seeds: int | None = None) -> keep.Estimate:
    """``reference_keep.estimate`` of the sweep these settings run of the grid (its first ``seeds`` seeds, default all)."""
    from pipeline import grids
    from pipeline import settings as settings_

    resolved = settings_.resolve(settings)
    budget = resolved["budget"] | ({"seeds": seeds} if seeds else {})
    grid = grids.load_grid(grid_path, budget)
    trials = grids.expand(grid, settings_.models_per_trial(resolved["pack"], resolved["device"]))
    return keep.estimate(grid.name, grid.experiment, trials)


def describe_machine() -> dict:
    """This machine's kind (GPU or CPU), card or CPU and cores, its driver, torch and CUDA, and
    whether training steps use TF32."""
    import subprocess

    import torch

    from icstn.train import TrainConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"kind": kind_here(), "torch": torch.__version__, "cuda": torch.version.cuda}
    out |= {"device": provenance.device_name(device), "cores": os.cpu_count()}
    out["tf32"] = device == "cuda" and TrainConfig.tf32  # the trainer's setting on CUDA; a CPU computes in fp32
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        out["nvidia-smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["nvidia-smi"] = f"unavailable ({type(exc).__name__})"
    return out


# --- a results folder <-> a reference ----------------------------------------------------------
def restore(grid: str, results_dir: str | Path, root: str | Path = ROOT, kind: str = "GPU") -> Path | None:
    """Lay out the ``kind`` reference of ``grid`` as ``results_dir``'s store of it, for a sweep to
    continue; returns the reference's folder, or None where the grid has none (the sweep starts
    afresh). ValueError where ``results_dir`` already holds the grid (a reference is never mixed into a run)."""
    source, results_dir = folder(grid, root, kind), Path(results_dir)
    if not (source / PROVENANCE).is_file():
        return None
    store = GridStore(results_dir, grid)
    if store.root.exists() or store.table.exists():
        raise ValueError(f"{results_dir} already holds {grid}: restore the reference into an empty results folder")
    results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=results_dir, prefix=f".{grid}-") as tmp:  # whole or nothing
        shutil.copytree(source, Path(tmp) / "copy")
        for item in (Path(tmp) / "copy").iterdir():
            item.rename(results_dir / item.name)
    return source


def trial_states(store: GridStore, keys: list[str]) -> dict[str, dict]:
    """Each trial's step, budget, whether it finished and whether a run can continue it (its
    checkpoint, or a finished trial's final state), from its record or its checkpoint."""
    import torch

    states = {}
    for key in keys:
        record = store.record(key)
        if record is not None:
            states[key] = {"step": record.iterations, "iterations": record.iterations, "finished": True,
                           "continuable": store.continues_from(key)}  # fmt: skip
        elif store.checkpoint(key).is_file():
            state = torch.load(store.checkpoint(key), map_location="cpu", weights_only=True)
            states[key] = {"step": state["step"], "iterations": state["train_config"]["iterations"], "finished": False, "continuable": True}
        else:
            states[key] = {"step": 0, "iterations": None, "finished": False, "continuable": False}
    budget = max((s["iterations"] for s in states.values() if s["iterations"]), default=None)
    return {k: s | {"iterations": s["iterations"] or budget} for k, s in states.items()}


def _sweep_keys(store: GridStore) -> tuple[list[str], str]:
    """The trials of the store's last sweep and its profile (every trial folder where it names none)."""
    summary = json.loads(store.summary.read_text()) if store.summary.is_file() else {}
    keys = summary.get("keys") or store.trial_keys()
    return keys, summary.get("profile", schema.default("profile"))


def _layout(results_dir: Path, grid: str, target_dir: Path, seconds: float | None, goal: int | None, run: dict) -> dict:
    """Write the compact reference of ``results_dir``'s grid into ``target_dir`` (``reference_keep``);
    returns its provenance."""
    store = GridStore(results_dir, grid)
    keys, profile = _sweep_keys(store)
    states = trial_states(store, keys)
    finished = [k for k in keys if states[k]["finished"]]
    if finished:  # the finished trials' table replaces an earlier run's
        table = results.collect(store, finished, profile)
        results.write(table, target_dir / f"{grid}.parquet")
    elif store.table.is_file():  # none finished yet: the earlier table stands
        table = pd.read_parquet(store.table)
        shutil.copyfile(store.table, target_dir / f"{grid}.parquet")
    else:
        table = None
    # the sweep's trials, the table's, and while a trial of the sweep has not started, the finished
    # trials of a shorter budget that it may continue from (their final state)
    shown = [store.record(k) for k in (dict.fromkeys(table.trial_key) if table is not None else ())]
    arrays = keep.arrays_kept([r for r in shown if r is not None], shown[0].trial.experiment) if shown and shown[0] else {}
    kept = set(keys) | (set(table.trial_key) if table is not None else set())
    waiting = any(s["step"] == 0 for s in states.values())
    target = GridStore(target_dir, grid)
    for key in store.trial_keys():
        if key in kept or (waiting and store.final_state(key).is_file()):
            keep.copy_trial(store, key, target, goal, arrays.get(key, 0))
    for path in store.shared():
        _copy(path, target.root / path.relative_to(store.root))
    states = {k: s | {"continuable": target.continues_from(k)} for k, s in states.items()}  # what the copy can continue
    earlier = results_dir / PROVENANCE
    facts = json.loads(earlier.read_text()) if earlier.is_file() else {"grid": grid, "profile": profile, "runs": []}
    steps = [s["step"] for s in states.values()] or [0]
    run = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "git_commit": provenance.git_commit(),
        **describe_machine(),
        **run,
        "seconds": seconds,
        "steps": {"min": min(steps), "max": max(steps)},
        "finished": len(finished),
        "trials": len(keys),
    }
    budget = max((s["iterations"] for s in states.values() if s["iterations"]), default=facts.get("iterations"))
    kind = facts.get("kind") or run["kind"]  # a reference keeps the kind it started with (its folder)
    facts |= {"kind": kind, "profile": profile, "iterations": budget, "trials": states, "runs": [*facts.get("runs", []), run]}
    (target_dir / PROVENANCE).write_text(json.dumps(facts, indent=1))
    return facts


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def size(folder: str | Path) -> int:
    """The bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def pack(results_dir: str | Path, grid: str, out: str | Path, seconds: float | None = None, goal: int | None = None,
         run: dict | None = None) -> Path:  # fmt: skip
    """The archive of ``results_dir``'s grid as a reference (``_layout``), this run's provenance
    (``run``: e.g. its processes and threads) appended; ``goal``: the iterations at which a finished
    trial is complete (its final state is then dropped; None keeps every one). ValueError, and no
    archive, where the reference would exceed its cap (``reference_keep.cap``)."""
    results_dir, out = Path(results_dir), Path(out)
    if not GridStore(results_dir, grid).root.is_dir():
        raise ValueError(f"{results_dir} holds no results of {grid}: nothing to pack")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / grid
        target.mkdir()
        _layout(results_dir, grid, target, seconds, goal, run or {})
        total, most = size(target), keep.cap(grid)
        if total > most:
            raise ValueError(f"the reference of {grid} is {total / 2**20:.1f} MiB, over its cap of {most / 2**20:g} MiB: "
                             "train fewer seeds or models in it")  # fmt: skip
        with atomic(out) as part, tarfile.open(part, "w:gz") as tar:
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    _add(tar, f"{grid}/{path.relative_to(target).as_posix()}", path.read_bytes())
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def unpack(archive: str | Path, into: str | Path = ROOT) -> Path:
    """Extract a reference archive to its folder under ``into`` (``folder``: by the kind its
    provenance gives); returns that folder. An earlier reference of the grid and kind is replaced only
    once the new one is whole and readable; ValueError, naming the archive, for one that is not a
    reference archive or is damaged (and then nothing changes)."""
    archive, into = Path(archive), Path(into)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = tar.getnames()
            grid = names[0].split("/")[0] if names else ""
            if f"{grid}/{PROVENANCE}" not in names or any(n.split("/")[0] != grid or ".." in n.split("/") for n in names):
                raise ValueError(f"{archive}: not a reference archive (`python -m pipeline.reference pack` writes one: "
                                 f"<grid>/{PROVENANCE}, the results table and the trials' files, all under <grid>/)")  # fmt: skip
            into.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=into, prefix=f".{grid}-") as tmp:  # beside the target: renames stay on one disk
                tar.extractall(tmp, filter="data")
                load(grid, tmp)  # readable as the reports will read it
                kind = json.loads((Path(tmp) / grid / PROVENANCE).read_text()).get("kind", "GPU")
                final, old = folder(grid, into, kind), Path(tmp) / "replaced"
                if final.exists():
                    final.rename(old)  # removed with the temporary folder
                (Path(tmp) / grid).rename(final)
    except (tarfile.TarError, OSError, EOFError, zlib.error, pyarrow.ArrowException, json.JSONDecodeError) as exc:
        raise ValueError(f"{archive}: not a readable reference archive ({type(exc).__name__}: {exc}); nothing was changed") from None
    return final


# --- the trials a reference holds ----------------------------------------------------------------
def trials_of(grid: str, root: str | Path = ROOT, config: str | Path = "config") -> list:
    """The trials a reference's runs trained, as the current code keys them: the grid as ``prepare``
    writes it (the reference's seeds), at each budget its trials state, packed as on a CPU or a GPU."""
    from pipeline import grids, settings

    folder = Path(root) / grid
    facts = facts_of(grid, root) or {}
    table = pd.read_parquet(folder / f"{grid}.parquet") if (folder / f"{grid}.parquet").is_file() else None
    seeds = int(table.seed.max()) + 1 if table is not None else 5
    budgets = {s["iterations"] for s in facts.get("trials", {}).values() if s.get("iterations")} | {facts.get("iterations")} - {None}
    found = []
    with tempfile.TemporaryDirectory() as work:
        for iterations in sorted(budgets):
            prepare(grid, work, seeds, {"budget": {"iterations": iterations}}, config)
            config_ = settings.resolve(json.loads((Path(work) / "settings.json").read_text()) | {"device": "cpu"})
            loaded = grids.load_grid(Path(work) / "grids" / f"{grid}.yaml", config_["budget"])
            found += [t for device in ("cpu", "cuda") for t in grids.expand(loaded, settings.models_per_trial(config_["pack"], device))]
    return found


# --- what the reports read ---------------------------------------------------------------------
def load(grid: str, root: str | Path = ROOT, kind: str = "GPU") -> tuple[pd.DataFrame, dict] | None:
    """A grid's ``kind`` reference results table and provenance, or None when no trial of it has finished."""
    where = folder(grid, root, kind)
    table = where / f"{grid}.parquet"
    if not table.is_file():
        return None
    return pd.read_parquet(table), json.loads((where / PROVENANCE).read_text())


def facts_of(grid: str, root: str | Path = ROOT, kind: str = "GPU") -> dict | None:
    """A grid's ``kind`` reference provenance, or None when it has none (with or without a table)."""
    path = folder(grid, root, kind) / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else None


def loaded(grid: str, root: str | Path = ROOT) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Each kind's reference of ``grid`` with a table, GPU first: {kind: (table, provenance)}."""
    return {kind: ref for kind in KINDS if (ref := load(grid, root, kind)) is not None}


def all_facts(grid: str, root: str | Path = ROOT) -> dict[str, dict]:
    """Each kind's reference provenance of ``grid``, GPU first (with or without a table)."""
    return {kind: facts for kind in KINDS if (facts := facts_of(grid, root, kind)) is not None}


def label(facts_or_kind: dict | str) -> str:
    """'reference (GPU)' or 'reference (CPU)': how the reports name a reference."""
    kind = facts_or_kind if isinstance(facts_or_kind, str) else facts_or_kind.get("kind", "GPU")
    return f"reference ({kind})"


def progress(facts: dict, title: str | None = None) -> str:
    """How far the reference has got, in one line: 'Table 2 reference: 41,000 of 200,000 iterations'
    (a CPU's: 'Table 1 reference (CPU): ...')."""
    name = "reference" if facts.get("kind", "GPU") == "GPU" else label(facts)
    return f"{title or facts['grid']} {name}: {reached(facts)}"


def reached(facts: dict) -> str:
    """The least step of the reference's trials against its budget, and what finished."""
    states, budget = list(facts["trials"].values()), facts["iterations"]
    steps = [s["step"] for s in states]
    done = sum(s["finished"] and s["step"] >= budget for s in states)
    line = f"{min(steps):,} of {budget:,} iterations"
    if done == len(states):
        return line + f", all {len(states)} trials"
    if done:
        return line + f"; {done} of {len(states)} trials finished, the others at {_span(s['step'] for s in states if not s['finished'])}"
    if min(steps) != max(steps):
        line += f" (its {len(states)} trials at {_span(steps)})"
    if not any(s.get("continuable", True) for s in states):
        line += "; no checkpoints: its next run starts afresh"
    return line


def _span(steps) -> str:
    steps = sorted(steps)
    return f"{steps[0]:,}" if steps[0] == steps[-1] else f"{steps[0]:,}-{steps[-1]:,}"


def note(facts: dict) -> str:
    """The reference's provenance in one line: its runs' cards (or CPUs), torch, commits and dates."""
    runs = facts["runs"]
    cards = ", ".join(dict.fromkeys(_card(r) for r in runs))
    torches = ", ".join(dict.fromkeys(r["torch"] for r in runs))
    commits = ", ".join(dict.fromkeys(r["git_commit"] for r in runs))
    tf32 = "TF32" if all(r.get("tf32") for r in runs) else "TF32 in some runs" if any(r.get("tf32") for r in runs) else "fp32"
    when = runs[0]["date"] if len(runs) == 1 else f"{runs[0]['date']} to {runs[-1]['date']}"
    return (
        f"{label(facts)}: {facts['profile']} profile, {reached(facts)}; {len(runs)} run{'s' * (len(runs) != 1)} "
        f"({sum(r.get('seconds') or 0 for r in runs):,.0f} s), {cards}, {tf32}, torch {torches}, commit {commits}, {when}"
    )


def column(table: pd.DataFrame) -> str:
    """What the reference's column shows: its finished trials, at their budget (an earlier run's table
    stands until a trial of the current budget finishes)."""
    its = ", ".join(f"{int(i):,}" for i in sorted(table.iterations.unique()))
    n = table.trial_key.nunique()
    return f"Its column: the {n} finished trial{'s' * (n != 1)}, at {its} iterations"


def _card(run: dict) -> str:
    smi = run.get("nvidia-smi", "")
    card = smi if smi and not smi.startswith("unavailable") else run["device"]
    return card + (f" x {run['processes']} processes" if run.get("processes", 1) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="the size bound of grids' references at some numbers of seeds, against their caps")
    p.add_argument("--grid", nargs="+", required=True, help="names of config/grids or grid files")
    p.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    p.add_argument("--extra", type=json_object, default={}, help="JSON over the profile (e.g. device, pack)")
    p = sub.add_parser("prepare", help="the grid with more seeds, and the paper profile's settings, for a reference run")
    p.add_argument("--grid", required=True, help="a name of config/grids, or a grid file (e.g. config/references/table2.yaml)")
    p.add_argument("--work", required=True)
    p.add_argument("--seeds", type=int, required=True)
    p.add_argument("--extra", type=json_object, default={}, help="JSON over the profile, e.g. a CPU dry run's budget")
    p = sub.add_parser("restore", help="the committed reference of a grid as a results folder a sweep continues")
    p.add_argument("--grid", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--reference", default=str(ROOT))
    p.add_argument("--kind", choices=KINDS, default="GPU", help="which of the grid's references (GPU: <grid>/, CPU: <grid>-cpu/)")
    p = sub.add_parser("pack", help="a grid's results folder into one reference archive")
    p.add_argument("--results", required=True)
    p.add_argument("--grid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=None, help="this run's seconds, for its provenance")
    p.add_argument("--plan", type=Path, default=None, help=f"prepare's {PLAN}: the goal at which a finished trial's state goes")
    p.add_argument("--processes", type=int, default=1, help="the sweep's processes, for the provenance")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process, for the provenance")
    p = sub.add_parser("unpack", help="an archive into reports/reference/<grid>/ (a CPU's: <grid>-cpu/)")
    p.add_argument("archive")
    p.add_argument("--into", default=str(ROOT))
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            import yaml

            with tempfile.TemporaryDirectory() as tmp:
                for grid in args.grid:
                    spec = yaml.safe_load(grid_file(grid).read_text())
                    spec.pop("seeds", None)
                    for n in args.seeds:
                        path = Path(tmp) / grid_file(grid).name
                        path.write_text(yaml.safe_dump(spec | {"seeds": list(range(n))}))
                        settings = yaml.safe_load(Path("config/config.yaml").read_text()) | args.extra
                        bound = size_bound(path, settings)
                        print(f"{bound.line()}: {'fits' if bound.total <= keep.cap(bound.grid) else 'OVER its cap'}")
        elif args.command == "prepare":
            print(prepare(args.grid, args.work, args.seeds, args.extra))
        elif args.command == "restore":
            source = restore(args.grid, args.results, args.reference, args.kind)
            facts = facts_of(args.grid, args.reference, args.kind)
            fresh = f"no {label(args.kind)} of {args.grid}: it starts afresh"
            print(f"{progress(facts)}: restored into {args.results}" if source else fresh, file=sys.stderr)
        elif args.command == "pack":
            goal = json.loads(args.plan.read_text())["goal"] if args.plan else None
            run = {"processes": args.processes} | ({"threads": args.threads} if args.threads else {})
            path = pack(args.results, args.grid, args.out, args.seconds, goal, run)
            with tarfile.open(path) as tar:
                facts = json.loads(tar.extractfile(f"{args.grid}/{PROVENANCE}").read())
            print(f"{progress(facts)}; {path}: {path.stat().st_size / 2**20:.2f} MiB", file=sys.stderr)
        else:
            where = unpack(args.archive, args.into)
            facts = json.loads((where / PROVENANCE).read_text())
            print(f"{progress(facts)}: {where}", file=sys.stderr)
    except (ValueError, FileNotFoundError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
