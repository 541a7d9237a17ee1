"""A reference: one grid of the paper profile, grown by any number of runs on GPU machines, committed.

    python -m pipeline.reference prepare --grid table2 --work WORK --seeds 5 [--extra JSON]
    python -m pipeline.reference restore --grid table2 --results WORK/results [--reference reports/reference]
    python -m pipeline.reference pack --results WORK/results --grid table2 --out table2.tar.gz [--seconds S]
    python -m pipeline.reference unpack table2.tar.gz [--into reports/reference]

``reports/reference/<grid>/`` is a results folder (``pipeline.store``) kept small:

    <grid>.parquet          the results table of the finished trials (none until one finishes)
    provenance.json         the grid's budget, every trial's step, and one entry per run that grew it
    <grid>/trials/<key>/    record.json and arrays.npz of a finished trial, and the state a run
                            continues: checkpoint.pt (unfinished) or final.pt (finished; a longer budget
                            continues it). Nothing else: no per-member copies, no Ray or MLflow records.

A run (``benchmarks/reference_run.sh GRID MINUTES``) restores the committed reference as the
results folder of a sweep, runs the sweep for MINUTES (its time limit: every trial checkpoints and
stops), and packs the folder back into one archive (at most 16 MiB), its run's provenance
appended; ``unpack`` lays that out as ``reports/reference/<grid>/`` in a checkout, whole or not at
all. Every report renders the reference as a column "reference (GPU)" beside the paper's and this
run's, and says how far it has got (``progress``).
"""

from __future__ import annotations

import argparse
import io
import json
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
from pipeline.files import atomic
from pipeline.settings import json_object
from pipeline.store import GridStore

MAX_BYTES = 16 * 2**20
ROOT = Path("reports/reference")
PROVENANCE = "provenance.json"


def prepare(grid: str, work: str | Path, seeds: int, extra: dict | None = None, config: str | Path = "config") -> str:
    """Write ``<work>/grids/<grid>.yaml`` (seeds 0..seeds-1: a profile's budget only lowers seeds)
    and ``<work>/settings.json`` (the paper profile, inline, untracked, and ``extra`` over it);
    returns the grid's experiment."""
    import yaml

    work, config = Path(work), Path(config)
    spec = yaml.safe_load((config / "grids" / f"{grid}.yaml").read_text())
    spec["seeds"] = list(range(seeds))
    (work / "grids").mkdir(parents=True, exist_ok=True)
    (work / "grids" / f"{grid}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    settings = yaml.safe_load((config / "config.yaml").read_text()) | {"executor": "inline", "tracking": {"enabled": False}}
    settings |= {**(extra or {}), "grids": str(work / "grids")}
    (work / "settings.json").write_text(json.dumps(settings))
    return spec["experiment"]


def describe_machine() -> dict:
    """This machine's card, its driver, torch and CUDA, and whether training steps use TF32."""
    import subprocess

    import torch

    from icstn.train import TrainConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": provenance.device_name(device)}
    out["tf32"] = device == "cuda" and TrainConfig.tf32  # the trainer's setting on CUDA; a CPU computes in fp32
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        out["nvidia-smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["nvidia-smi"] = f"unavailable ({type(exc).__name__})"
    return out


# --- a results folder <-> a reference ----------------------------------------------------------
def restore(grid: str, results_dir: str | Path, root: str | Path = ROOT) -> Path | None:
    """Lay out the reference of ``grid`` as ``results_dir``'s store of it, for a sweep to continue;
    returns the reference's folder, or None where the grid has none (the sweep starts afresh).
    ValueError where ``results_dir`` already holds the grid (a reference is never mixed into a run)."""
    source, results_dir = Path(root) / grid, Path(results_dir)
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


def _layout(results_dir: Path, grid: str, folder: Path, seconds: float | None) -> dict:
    """Write the compact reference of ``results_dir``'s grid into ``folder``; returns its provenance."""
    store = GridStore(results_dir, grid)
    keys, profile = _sweep_keys(store)
    states = trial_states(store, keys)
    finished = [k for k in keys if states[k]["finished"]]
    if finished:  # the finished trials' table replaces an earlier run's
        table = results.collect(store, finished, profile)
        results.write(table, folder / f"{grid}.parquet")
    elif store.table.is_file():  # none finished yet: the earlier table stands
        table = pd.read_parquet(store.table)
        shutil.copyfile(store.table, folder / f"{grid}.parquet")
    else:
        table = None
    # the sweep's trials, the table's, and while a trial of the sweep has not started, the finished
    # trials of a shorter budget that it may continue from (their final state)
    kept = set(keys) | (set(table.trial_key) if table is not None else set())
    waiting = any(s["step"] == 0 for s in states.values())
    target = GridStore(folder, grid)
    for key in store.trial_keys():
        if key in kept or (waiting and store.final_state(key).is_file()):
            for path in store.essentials(key):
                _copy(path, target.folder(key) / path.name)
    for path in store.shared():
        _copy(path, target.root / path.relative_to(store.root))
    earlier = results_dir / PROVENANCE
    facts = json.loads(earlier.read_text()) if earlier.is_file() else {"grid": grid, "profile": profile, "runs": []}
    steps = [s["step"] for s in states.values()] or [0]
    run = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "git_commit": provenance.git_commit(),
        **describe_machine(),
        "seconds": seconds,
        "steps": {"min": min(steps), "max": max(steps)},
        "finished": len(finished),
        "trials": len(keys),
    }
    budget = max((s["iterations"] for s in states.values() if s["iterations"]), default=facts.get("iterations"))
    facts |= {"profile": profile, "iterations": budget, "trials": states, "runs": [*facts.get("runs", []), run]}
    (folder / PROVENANCE).write_text(json.dumps(facts, indent=1))
    return facts


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def size(folder: str | Path) -> int:
    """The bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def pack(results_dir: str | Path, grid: str, out: str | Path, seconds: float | None = None) -> Path:
    """The archive of ``results_dir``'s grid as a reference (``_layout``), this run's provenance
    appended; ValueError, and no archive, where the reference would exceed ``MAX_BYTES``."""
    results_dir, out = Path(results_dir), Path(out)
    if not GridStore(results_dir, grid).root.is_dir():
        raise ValueError(f"{results_dir} holds no results of {grid}: nothing to pack")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / grid
        folder.mkdir()
        _layout(results_dir, grid, folder, seconds)
        total = size(folder)
        if total > MAX_BYTES:
            raise ValueError(f"the reference of {grid} is {total / 2**20:.1f} MiB, over its cap of {MAX_BYTES / 2**20:g} MiB: "
                             "train fewer seeds or models in it")  # fmt: skip
        with atomic(out) as part, tarfile.open(part, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    _add(tar, f"{grid}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def unpack(archive: str | Path, into: str | Path = ROOT) -> Path:
    """Extract a reference archive to ``<into>/<grid>/``; returns that folder. An earlier reference
    of the grid is replaced only once the new one is whole and readable; ValueError, naming the
    archive, for one that is not a reference archive or is damaged (and then nothing changes)."""
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
                json.loads((Path(tmp) / grid / PROVENANCE).read_text())
                final, old = into / grid, Path(tmp) / "replaced"
                if final.exists():
                    final.rename(old)  # removed with the temporary folder
                (Path(tmp) / grid).rename(final)
    except (tarfile.TarError, OSError, EOFError, zlib.error, pyarrow.ArrowException, json.JSONDecodeError) as exc:
        raise ValueError(f"{archive}: not a readable reference archive ({type(exc).__name__}: {exc}); nothing was changed") from None
    return into / grid


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
def load(grid: str, root: str | Path = ROOT) -> tuple[pd.DataFrame, dict] | None:
    """A grid's reference results table and provenance, or None when no trial of it has finished."""
    folder = Path(root) / grid
    table = folder / f"{grid}.parquet"
    if not table.is_file():
        return None
    return pd.read_parquet(table), json.loads((folder / PROVENANCE).read_text())


def facts_of(grid: str, root: str | Path = ROOT) -> dict | None:
    """A grid's reference provenance, or None when it has none (with or without a table)."""
    path = Path(root) / grid / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else None


def progress(facts: dict, title: str | None = None) -> str:
    """How far the reference has got, in one line: 'Table 2 reference: 41,000 of 200,000 iterations'."""
    return f"{title or facts['grid']} reference: {reached(facts)}"


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
    """The reference's provenance in one line: its runs' cards, torch, commits and dates."""
    runs = facts["runs"]
    cards = ", ".join(dict.fromkeys(_card(r) for r in runs))
    torches = ", ".join(dict.fromkeys(r["torch"] for r in runs))
    commits = ", ".join(dict.fromkeys(r["git_commit"] for r in runs))
    tf32 = "TF32" if all(r.get("tf32") for r in runs) else "TF32 in some runs" if any(r.get("tf32") for r in runs) else "fp32"
    when = runs[0]["date"] if len(runs) == 1 else f"{runs[0]['date']} to {runs[-1]['date']}"
    return (
        f"reference (GPU): {facts['profile']} profile, {reached(facts)}; {len(runs)} run{'s' * (len(runs) != 1)} "
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
    return smi if smi and not smi.startswith("unavailable") else run["device"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="the grid with more seeds, and the paper profile's settings, for a reference run")
    p.add_argument("--grid", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seeds", type=int, required=True)
    p.add_argument("--extra", type=json_object, default={}, help="JSON over the profile, e.g. a CPU dry run's budget")
    p = sub.add_parser("restore", help="the committed reference of a grid as a results folder a sweep continues")
    p.add_argument("--grid", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--reference", default=str(ROOT))
    p = sub.add_parser("pack", help="a grid's results folder into one reference archive")
    p.add_argument("--results", required=True)
    p.add_argument("--grid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=None, help="this run's seconds, for its provenance")
    p = sub.add_parser("unpack", help="an archive into reports/reference/<grid>/")
    p.add_argument("archive")
    p.add_argument("--into", default=str(ROOT))
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.grid, args.work, args.seeds, args.extra))
        elif args.command == "restore":
            source = restore(args.grid, args.results, args.reference)
            facts = facts_of(args.grid, args.reference)
            print(f"{progress(facts)}: restored into {args.results}" if source else f"no reference of {args.grid}: it starts afresh",
                  file=sys.stderr)  # fmt: skip
        elif args.command == "pack":
            path = pack(args.results, args.grid, args.out, args.seconds)
            with tarfile.open(path) as tar:
                facts = json.loads(tar.extractfile(f"{args.grid}/{PROVENANCE}").read())
            print(f"{progress(facts)}; {path}: {path.stat().st_size / 2**20:.2f} MiB", file=sys.stderr)
        else:
            folder = unpack(args.archive, args.into)
            print(f"{progress(facts_of(folder.name, folder.parent))}: {folder}", file=sys.stderr)
    except (ValueError, FileNotFoundError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
