"""Run one grid: validate it, expand it into trials, skip the done ones, run the rest, collect.

    python -m pipeline.sweep --grid config/grids/table2.yaml --out results \
        [--data data/processed] [--settings JSON] [--executor ray|inline] [--no-tracking] [--stop-after 8m]

``--settings`` is the resolved workflow config (profile, budget, ray, device, tracking) as JSON
(``pipeline.settings``). Outputs: the grid's store under ``--out`` (``pipeline.store``) and its
results table ``<out>/<grid>.parquet``.

Resuming: a trial whose record exists is done and is never retrained. An unfinished trial
resumes from its last checkpoint, whether it was interrupted (killed driver) or its worker
died (Ray retries it).

A time limit (``--stop-after 8m``, the config key ``stop_after``): when it expires, every running
trial writes its checkpoint and stops, no other starts, and the sweep ends with "stopped at the
time limit; rerun to continue" and status 0, writing no results table. The same command then
continues every trial exactly where it stopped. A SIGTERM stops the trials the same way, but ends
the sweep as interrupted (status 130), as Ctrl-C does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from icstn import data
from pipeline import executors, grids, results, search, settings, tracking
from pipeline.files import write_json
from pipeline.provenance import git_commit
from pipeline.runner import Context
from pipeline.stop import Limit, LimitReached
from pipeline.store import GridStore
from pipeline.trial import Trial, digest


class SweepInterrupted(RuntimeError):
    """Trials were stopped before they finished (Ctrl-C, SIGTERM); a rerun resumes them."""


class SweepStopped(SweepInterrupted):
    """The sweep's time limit stopped its trials, checkpointed; a rerun continues them."""


def sweep(
    grid_path: str | Path, out: str | Path, data_root: str | Path, config: dict, executor: str = "ray", track: bool = True,
    limit: Limit | None = None,
) -> Path:  # fmt: skip
    """Run every unfinished trial of a grid and write ``<out>/<grid>.parquet``; returns its path.

    ``limit`` (default: ``config['stop_after']`` from now) stops the trials early: SweepStopped.
    """
    config = settings.resolve(config)
    settings.check_device(config, executor)
    limit = limit or Limit.after(config["stop_after"])
    backend = executors.get(executor)
    grid = grids.load_grid(grid_path, config["budget"])
    data.check(data_root, grid["experiment"])  # fail before any compute if the data is not prepared, or damaged
    ctx = Context(str(Path(data_root).resolve()), str(Path(out).resolve()), config["device"], config["cuda_graph"], limit=limit)
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
    try:
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
    except LimitReached as exc:  # a search stopped: its samples, and so every trial, wait for the rerun
        unfinished, why = trials, str(exc)
    else:
        why = f"{len(unfinished)} of {len(trials)} trial{'s' * (len(trials) != 1)} unfinished"
    summary |= {"trials": len(trials), "keys": [t.key for t in trials], "seconds": round(time.perf_counter() - start, 1)}
    if unfinished:
        _stopped(grid["name"], ctx.limit, why, store, summary)
    df = results.collect(store, summary["keys"], config["profile"])
    path = results.write(df, store.table)
    summary |= {"finished": True, "trained": len(todo)}
    write_json(store.summary, summary)
    if tracker is not None:
        tracker.finish_sweep({k: v for k, v in summary.items() if k != "keys"})
    print(f"{grid['name']}: {len(df)} rows -> {path} ({summary['seconds']} s)", file=sys.stderr)
    return path


def _stopped(name: str, limit: Limit, why: str, store: GridStore, summary: dict) -> None:
    """Raise what ended the sweep early: its limit (SweepStopped, noted in the summary) or an interruption."""
    if limit.time_up() or limit.step is not None:  # the time limit, or the step every trial was to stop at
        at = "the time limit" if limit.time_up() else f"step {limit.step:,}"
        write_json(store.summary, summary | {"finished": False, "stopped": at})  # the workflow reads it: no table yet
        raise SweepStopped(f"{name}: stopped at {at}; rerun to continue ({why}, their checkpoints written)")
    # Tune stops its trials on SIGINT and returns as if done; a SIGTERM stops them at their next step
    raise SweepInterrupted(f"{name}: interrupted with {why}; run the same command again to resume them from their checkpoints")


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
    parser.add_argument("--stop-after", default=None, metavar="DURATION",
                        help="a time limit, e.g. 90s, 8m, 1.5h: then every trial checkpoints and stops, and a rerun continues")  # fmt: skip
    parser.add_argument("--deadline", type=float, default=None, help="the limit as a time.time() value (a workflow's, for all its sweeps)")
    args = parser.parse_args(argv)
    config = args.settings
    if args.cores and not config.get("ray", {}).get("num_cpus"):
        config = settings.merge(config, {"ray": {"num_cpus": args.cores}})
    executor = args.executor or config.get("executor", "ray")
    request = GridStore(args.out, Path(args.grid).stem).stop_request(f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if args.deadline:
            limit = Limit(args.deadline, str(request))
        elif args.stop_after:
            limit = Limit.after(args.stop_after, request, where="--stop-after")
        else:
            limit = Limit.after(config.get("stop_after"), request, where="config key 'stop_after'")
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, lambda *_: limit.request())  # a job stopped by its scheduler: every trial checkpoints and stops
    try:
        sweep(args.grid, args.out, args.data, config, executor, track=not args.no_tracking, limit=limit)
    except (grids.GridError, tracking.TrackingError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SweepStopped as exc:
        print(str(exc), file=sys.stderr)
        return 0
    except (KeyboardInterrupt, SweepInterrupted) as exc:
        print(f"interrupted: {exc or 'run the same command again to resume'}", file=sys.stderr)
        return 130
    finally:
        limit.withdraw()
    return 0


if __name__ == "__main__":
    sys.exit(main())
