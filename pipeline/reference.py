"""A reference run: one grid's results from a GPU machine, committed beside the reports.

    python -m pipeline.reference prepare --grid table2 --work WORK --seeds 16 [--extra JSON] [--fit FIT.jsonl]
    python -m pipeline.reference pack --results RESULTS --grid table2 --out table2.tar.gz [--profile reference]
    python -m pipeline.reference unpack table2.tar.gz [--into reports/reference]

``prepare`` writes what the run trains (``benchmarks/reference_run.sh``): a copy of the grid with
more seeds (a profile's budget only lowers seeds) and the settings, the reference profile over the
main config, with the iterations a timing run fitted to the time at hand. ``pack`` runs where the
grid was trained (``benchmarks/reference_run.sh``): it writes one archive
(at most 16 MiB) with the grid's results table, the arrays its figures need, and the provenance
(card, torch, driver, commit, iterations, seeds, date). ``unpack`` lays it out as
``reports/reference/<grid>/``, a results folder like any other (``pipeline.store``), which every
report then renders as a column "reference (GPU)" beside the paper's and this run's.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pandas as pd
import pyarrow

from pipeline import provenance
from pipeline.files import atomic
from pipeline.settings import json_object
from pipeline.store import GridStore

MAX_BYTES = 16 * 2**20
ROOT = Path("reports/reference")


def prepare(grid: str, work: str | Path, seeds: int, extra: dict | None = None, fit: str | Path | None = None,
            config: str | Path = "config") -> str:  # fmt: skip
    """Write ``<work>/grids/<grid>.yaml`` (seeds 0..seeds-1) and ``<work>/settings.json``; returns
    the grid's experiment. ``fit``: the JSON lines of ``benchmarks.throughput --fit``, whose last
    fitted iterations become the budget's."""
    import yaml

    work, config = Path(work), Path(config)
    spec = yaml.safe_load((config / "grids" / f"{grid}.yaml").read_text())
    spec["seeds"] = list(range(seeds))
    (work / "grids").mkdir(parents=True, exist_ok=True)
    (work / "grids" / f"{grid}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    settings = {**yaml.safe_load((config / "config.yaml").read_text()), **yaml.safe_load((config / "reference.yaml").read_text())}
    settings |= {**(extra or {}), "grids": str(work / "grids")}
    if fit is not None:
        fitted = [json.loads(line) for line in Path(fit).read_text().splitlines() if '"fit"' in line]
        if not fitted:
            raise ValueError(f"{fit}: no fitted iterations (benchmarks.throughput --fit) in it")
        settings["budget"] = {**settings.get("budget", {}), "iterations": fitted[-1]["iterations"]}
    (work / "settings.json").write_text(json.dumps(settings))
    return spec["experiment"]


def describe_machine() -> dict:
    """This machine's card, its driver, torch and CUDA: what a GPU figure needs beside it."""
    import subprocess

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": provenance.device_name(device)}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        out["nvidia-smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["nvidia-smi"] = f"unavailable ({type(exc).__name__})"
    return out


def pack(results_dir: str | Path, grid: str, out: str | Path, profile: str = "reference") -> Path:
    """The archive of ``<results_dir>/<grid>.parquet`` and its trials' arrays, with the provenance."""
    store = GridStore(results_dir, grid)
    df = pd.read_parquet(store.table)
    facts = {
        "grid": grid,
        "profile": profile,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "git_commit": provenance.git_commit(),
        "iterations": sorted(int(i) for i in df.iterations.unique()),
        "seeds": sorted(int(s) for s in df.seed.unique()),
        "models": list(dict.fromkeys(df.model)),
        **describe_machine(),
        "trained_on": sorted(df.device.unique()),
        "seconds": float(df.drop_duplicates("trial_key").seconds.sum()),
    }
    with atomic(out) as tmp, tarfile.open(tmp, "w:gz") as tar:
        _add(tar, f"{grid}/{grid}.parquet", store.table.read_bytes())
        for key in df.trial_key.unique():
            arrays = store.folder(key) / "arrays.npz"
            _add(tar, f"{grid}/{grid}/trials/{key}/arrays.npz", arrays.read_bytes())
        _add(tar, f"{grid}/provenance.json", json.dumps(facts, indent=1).encode())
    size = Path(out).stat().st_size
    if size > MAX_BYTES:
        Path(out).unlink()
        raise ValueError(f"the reference archive of {grid} is {size / 2**20:.1f} MiB, over {MAX_BYTES // 2**20} MiB: fewer seeds or models")
    return Path(out)


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
            needed = {f"{grid}/{grid}.parquet", f"{grid}/provenance.json"}
            if not needed <= set(names) or any(n.split("/")[0] != grid or ".." in n.split("/") for n in names):
                raise ValueError(f"{archive}: not a reference archive (`python -m pipeline.reference pack` writes one: "
                                 "<grid>/<grid>.parquet, <grid>/provenance.json and the arrays, all under <grid>/)")  # fmt: skip
            into.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=into, prefix=f".{grid}-") as tmp:  # beside the target: renames stay on one disk
                tar.extractall(tmp, filter="data")
                load(grid, tmp)  # readable as the reports will read it
                final, old = into / grid, Path(tmp) / "replaced"
                if final.exists():
                    final.rename(old)  # removed with the temporary folder
                (Path(tmp) / grid).rename(final)
    except (tarfile.TarError, OSError, EOFError, zlib.error, pyarrow.ArrowException, json.JSONDecodeError) as exc:
        raise ValueError(f"{archive}: not a readable reference archive ({type(exc).__name__}: {exc}); nothing was changed") from None
    return into / grid


def load(grid: str, root: str | Path = ROOT) -> tuple[pd.DataFrame, dict] | None:
    """A grid's reference results table and provenance, or None when it has none."""
    folder = Path(root) / grid
    table = folder / f"{grid}.parquet"
    if not table.is_file():
        return None
    return pd.read_parquet(table), json.loads((folder / "provenance.json").read_text())


def note(facts: dict) -> str:
    """The reference's provenance in one line."""
    return (
        f"reference (GPU): {facts['profile']} profile, {', '.join(map(str, facts['iterations']))} iterations, "
        f"{len(facts['seeds'])} seeds, {_card(facts)}, torch {facts['torch']}, "
        f"commit {facts['git_commit']}, {facts['date']}"
    )


def _card(facts: dict) -> str:
    smi = facts.get("nvidia-smi", "")
    return smi if smi and not smi.startswith("unavailable") else facts["device"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="the grid with more seeds, and the settings, for a reference run")
    p.add_argument("--grid", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seeds", type=int, required=True)
    p.add_argument("--extra", type=json_object, default={}, help="JSON over the profile, e.g. a CPU dry run's budget")
    p.add_argument("--fit", help="benchmarks.throughput --fit output: its iterations become the budget's")
    p = sub.add_parser("pack", help="a grid's results into one archive")
    p.add_argument("--results", required=True)
    p.add_argument("--grid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--profile", default="reference")
    p = sub.add_parser("unpack", help="an archive into reports/reference/<grid>/")
    p.add_argument("archive")
    p.add_argument("--into", default=str(ROOT))
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.grid, args.work, args.seeds, args.extra, args.fit))
        elif args.command == "pack":
            path = pack(args.results, args.grid, args.out, args.profile)
            print(f"{path}: {path.stat().st_size / 2**20:.2f} MiB", file=sys.stderr)
        else:
            print(unpack(args.archive, args.into), file=sys.stderr)
    except (ValueError, FileNotFoundError, tarfile.TarError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
