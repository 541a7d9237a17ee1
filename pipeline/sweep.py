"""Run one grid: validate it, expand it into trials, skip the done ones, run the rest, collect.

    python -m pipeline.sweep --grid config/grids/table2.yaml --out results \
        [--data data/processed] [--settings JSON] [--executor ray|inline] [--no-tracking]

``--settings`` is the resolved workflow config (profile, budget, ray, device, tracking) as JSON
(``pipeline.settings``). Outputs: the grid's store under ``--out`` (``pipeline.store``) and its
results table ``<out>/<grid>.parquet``.

Resuming: a trial whose record exists is done and is never retrained. An unfinished trial
resumes from its last checkpoint, whether it was interrupted (killed driver) or its worker
died (Ray retries it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from icstn import data
from pipeline import executors, grids, interrupt, results, search, settings, tracking
from pipeline.files import write_json
from pipeline.provenance import git_commit
from pipeline.runner import Context
from pipeline.store import GridStore
from pipeline.trial import Trial, digest


class SweepInterrupted(RuntimeError):
    """Trials were stopped before they finished (Ctrl-C, SIGTERM); a rerun resumes them."""


def sweep(grid_path: str | Path, out: str | Path, data_root: str | Path, config: dict, executor: str = "ray", track: bool = True) -> Path:
    """Run every unfinished trial of a grid and write ``<out>/<grid>.parquet``; returns its path."""
    config = settings.resolve(config)
    settings.check_device(config, executor)
    backend = executors.get(executor)
    grid = grids.load_grid(grid_path, config["budget"])
    data.check(data_root, grid["experiment"])  # fail before any compute if the data is not prepared, or damaged
    ctx = Context(str(Path(data_root).resolve()), str(Path(out).resolve()), config["device"], config["cuda_graph"])
    trials = grids.expand(grid, settings.models_per_trial(config["pack"], config["device"]))
    tracker = None
    if track and config["tracking"]["enabled"]:
        tags = {"profile": config["profile"], "git_commit": git_commit(), "executor": executor}
        tracker = tracking.Tracker(grid, digest([t.key for t in trials]), tags, config["tracking"]["uri"])
    try:
        return _run(grid, trials, ctx, config, backend, tracker, {"profile": config["profile"], "executor": executor})
    except BaseException as exc:  # no MLflow run of a failed or interrupted sweep stays RUNNING
        if tracker is not None:
            tracker.abort("KILLED" if isinstance(exc, KeyboardInterrupt | SweepInterrupted) else "FAILED")
        raise


def _run(grid: dict, trials: list[Trial], ctx: Context, config: dict, backend, tracker, summary: dict) -> Path:
    store = GridStore(ctx.results, grid["name"])
    start = time.perf_counter()
    if "search" in grid:
        best = search.best_settings(grid, trials, ctx, config, backend, tracker)
        trials = search.apply(trials, best)
        summary["best"] = best[grid["models"][0]] if not grid["search"]["per_model"] else best
    # Before any compute: a damaged record (it would fail the table) and a damaged checkpoint (every retry) each stop the sweep
    todo = [t for t in trials if store.record(t.key) is None]
    for t in todo:
        check_checkpoint(store.checkpoint(t.key))
    models = sum(len(t.members) for t in todo)
    print(f"{grid['name']}: {len(trials)} trial{'s' * (len(trials) != 1)}, {len(trials) - len(todo)} already done, {len(todo)} to run "
          f"({models} models of {grid['iterations']:,} iterations on {ctx.device})", file=sys.stderr, flush=True)  # fmt: skip
    if todo:
        backend.run(todo, ctx, config, tracker)
    unfinished = [t.key for t in trials if not store.done(t.key)]
    if unfinished:  # Tune stops its trials on SIGINT and returns as if done
        raise SweepInterrupted(
            f"{grid['name']}: interrupted with {len(unfinished)} of {len(trials)} trials unfinished; "
            "run the same command again to resume them from their checkpoints"
        )
    df = results.collect(store, [t.key for t in trials], config["profile"])
    path = results.write(df, store.table)
    summary |= {"trials": len(trials), "trained": len(todo), "seconds": round(time.perf_counter() - start, 1)}
    write_json(store.summary, summary)
    if tracker is not None:
        tracker.finish_sweep(summary)
    print(f"{grid['name']}: {len(df)} rows -> {path} ({summary['seconds']} s)", file=sys.stderr)
    return path


def check_checkpoint(path: Path) -> None:
    """ValueError naming a checkpoint that exists but cannot be read."""
    if path.is_file():
        import torch

        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to retrain that trial afresh") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--out", default="results")
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--settings", default={}, type=settings.json_object, help="resolved workflow config, JSON")
    parser.add_argument("--executor", choices=list(executors.NAMES), default=None)
    parser.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    parser.add_argument("--cores", type=int, default=None, help="a local Ray runtime's CPUs, where ray.num_cpus is unset")
    args = parser.parse_args(argv)
    config = args.settings
    if args.cores and not config.get("ray", {}).get("num_cpus"):
        config = settings.merge(config, {"ray": {"num_cpus": args.cores}})
    executor = args.executor or config.get("executor", "ray")
    interrupt.sigterm_interrupts()  # a job stopped by its scheduler ends like Ctrl-C
    try:
        sweep(args.grid, args.out, args.data, config, executor, track=not args.no_tracking)
    except (grids.GridError, tracking.TrackingError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SweepInterrupted) as exc:
        resume = f"{Path(args.grid).stem}: run the same command again to resume its unfinished trials from their checkpoints"
        print(f"interrupted: {str(exc) or resume}", file=sys.stderr)  # a KeyboardInterrupt has no text
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
