"""Run one grid: validate it, expand it into trials, skip the done ones, run the rest, collect.

    python -m pipeline.sweep --grid config/grids/table2.yaml --out results [--profile quick|medium|paper] \
        [--data data/processed] [--settings JSON] [--executor ray|inline] [--no-tracking] [--stop-after 8m]

``--profile`` is a budget profile, as ``--configfile`` gives the workflow one (``config/<name>.yaml``
over ``config/config.yaml``; without it, the paper profile's defaults: each grid's own budget).
``--settings`` is the resolved workflow config (profile, budget, ray, device, tracking) as JSON
(``pipeline.settings``), over the profile. Outputs: the grid's store under ``--out`` (``pipeline.store``) and its
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
from pipeline import executors, files, grids, interrupt, migrate, results, schema, search, settings, tracking
from pipeline.files import write_json
from pipeline.provenance import git_commit
from pipeline.runner import Context, Unrecoverable, check_checkpoint
from pipeline.stop import DEADLINE_ENV, Limit, LimitReached
from pipeline.store import GridStore
from pipeline.trial import Trial, digest


class SweepInterrupted(RuntimeError):
    """Trials were stopped before they finished (Ctrl-C, SIGTERM); a rerun resumes them."""


class SweepStopped(SweepInterrupted):
    """The sweep's time limit stopped its trials, checkpointed; a rerun continues them."""


def sweep(
    grid_path: str | Path, out: str | Path, data_root: str | Path, config: dict, executor: str | None = None, track: bool = True,
    limit: Limit | None = None, continues: str | None = None,
) -> Path:  # fmt: skip
    """Run every unfinished trial of a grid and write ``<out>/<grid>.parquet``; returns its path.

    ``limit`` (default: ``config['stop_after']`` from now) stops the trials early: SweepStopped;
    ``executor`` (default: ``config['executor']``) runs the trials. ``continues``: the stop of an
    earlier run this one continues, noted in the summary (default: the last summary's).
    """
    config = settings.resolve(config)
    executor = executor or config["executor"]
    settings.check_device(config, executor)
    limit = limit or Limit.after(config["stop_after"])
    backend = executors.get(executor)
    grid = grids.load_grid(grid_path, config["budget"])
    pack = settings.models_per_trial(config["pack"], config["device"])
    grids.check_size(grid, grid_path, pack, settings.max_trials(config))  # before expanding it, which takes a while for a huge grid
    data.check(data_root, grid.experiment)  # fail before any compute if the data is not prepared, or damaged
    ctx = Context(str(Path(data_root).resolve()), str(Path(out).resolve()), config["device"], config["cuda_graph"], limit=limit,
                  sweep_id=uuid.uuid4().hex)  # fmt: skip
    track = track and config["tracking"]["enabled"]
    check_space(ctx, config, track)
    trials = grids.expand(grid, pack)
    store = GridStore(ctx.results, grid.name)
    renamed = migrate.upgrade(store, trials)  # before the tracker looks for the runs of their keys
    if renamed:
        print(f"{grid.name}: {len(renamed)} trial{'s' * (len(renamed) != 1)} stored under an earlier version's keys, renamed to the "
              f"current ones ({store.rekey_log})", file=sys.stderr, flush=True)  # fmt: skip
    tracker = None
    if track:
        files.quiet_disk_full("mlflow.store.db.utils")  # a store on a full disk: the sweep says so once
        tags = {"profile": config["profile"], "git_commit": git_commit(), "executor": executor}
        aliases = store.aliases()
        earlier = digest([aliases.get(t.key, [t.key])[-1] for t in trials])  # the sweep's key before the renames
        tracker = tracking.Tracker(grid, store, digest([t.key for t in trials]), tags, config["tracking"]["uri"], earlier)
    try:
        # given by the workflow, which removed the summary; else the summary's
        continued = store.last_stop() if continues is None else continues
        summary = {"profile": config["profile"], "executor": executor, "continues": continued}
        return _run(grid, trials, ctx, config, backend, tracker, summary)
    except BaseException as exc:  # no MLflow run of a failed or interrupted sweep stays RUNNING
        # what a full disk could not write: the file its error names, else an MLflow store's (sqlite's
        # 'database or disk is full' names none), else the results
        store_full = tracker is not None and not isinstance(files.out_of_space(exc), OSError)
        full = files.disk_full(exc, tracker.uri if store_full else ctx.results)
        if tracker is not None:
            try:
                tracker.abort("KILLED" if isinstance(exc, KeyboardInterrupt | SweepInterrupted) else "FAILED")
            except Exception:
                if full is None:
                    raise  # a full store cannot record it either: its runs stay RUNNING until the rerun
        if full is not None and full is not exc:
            raise full from exc
        raise


def check_space(ctx: Context, config: dict, track: bool) -> None:
    """DiskFull, before any compute, where the results or a local MLflow store would be written to a full filesystem."""
    files.check_space(ctx.results, "the results")
    uri = tracking.tracking_uri(config["tracking"]["uri"])
    if track and uri.startswith("sqlite:///"):
        tracking.check_sqlite(uri)  # a store that cannot be opened (/proc/x.db) is named as such, not as full
        files.check_space(tracking.sqlite_path(uri), f"the MLflow store {uri}")


def _run(grid: grids.Grid, trials: list[Trial], ctx: Context, config: dict, backend, tracker, summary: dict) -> Path:
    store = GridStore(ctx.results, grid.name)
    start = time.perf_counter()
    try:
        if grid.search is not None:
            best = search.best_settings(grid, trials, ctx, config, backend, tracker)
            trials = search.apply(trials, best)
            summary["best"] = best if grid.search.per_model else best[grid.models[0]]
        # Before any compute: a damaged record (it would fail the table) and a checkpoint its trial cannot resume
        # (it would fail every retry, or be resumed as the wrong trial) each stop the sweep
        todo = [t for t in trials if store.record(t.key) is None]
        for t in todo:
            check_checkpoint(t, ctx)
        models = sum(len(t.members) for t in todo)
        print(f"{grid.name}: {len(trials)} trial{'s' * (len(trials) != 1)}, {len(trials) - len(todo)} already done, {len(todo)} to run "
              f"({models} models of {grid.iterations:,} iterations on {ctx.device}): {models * grid.iterations:,} model-iterations",
              file=sys.stderr, flush=True)  # fmt: skip
        if todo:
            backend.run(todo, ctx, config, tracker)
        unfinished = [t.key for t in trials if not store.done(t.key)]
    except LimitReached as exc:  # a search stopped: its samples, and so every trial, wait for the rerun
        unfinished, why = trials, str(exc)
    else:
        why = f"{len(unfinished)} of {len(trials)} trial{'s' * (len(trials) != 1)} unfinished"
    summary |= {"trials": len(trials), "keys": [t.key for t in trials], "seconds": round(time.perf_counter() - start, 1)}
    if unfinished:
        _stopped(grid.name, ctx.limit, why, store, summary)
    df = results.collect(store, summary["keys"], config["profile"])
    path = results.write(df, store.table)
    # what this sweep trained, and what another process sharing the store finished meanwhile
    mine = sum(store.record(t.key).where.get("sweep") == ctx.sweep_id for t in todo)
    summary |= {"finished": True, "trained": mine, "trained_by_another": len(todo) - mine}
    write_json(store.summary, summary)
    if tracker is not None:
        tracker.finish_sweep({k: v for k, v in summary.items() if k != "keys"})
    print(f"{grid.name}: {len(df)} rows -> {path} ({summary['seconds']} s)", file=sys.stderr)
    return path


def _stopped(name: str, limit: Limit, why: str, store: GridStore, summary: dict) -> None:
    """Raise what ended the sweep early: its limit (SweepStopped, noted in the summary) or an interruption.
    A request (SIGTERM) is an interruption whenever it came, even once the time limit has passed too."""
    if not limit.requested() and (limit.time_up() or limit.step is not None):  # the time limit, or the step every trial was to stop at
        at = "the time limit" if limit.time_up() else f"step {limit.step:,}"
        # the workflow reads it: no table yet, and a new stop (its id) to continue
        write_json(store.summary, summary | {"finished": False, "stopped": at, "stop": uuid.uuid4().hex[:12]})
        raise SweepStopped(f"{name}: stopped at {at}; rerun to continue ({why}, their checkpoints written)")
    # Tune stops its trials on SIGINT and returns as if done; a SIGTERM stops them at their next step
    raise SweepInterrupted(f"{name}: interrupted with {why}; run the same command again to resume them from their checkpoints")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--out", default=schema.default("results"))
    parser.add_argument("--data", default=None, help="prepared datasets (default: the profile's data.processed)")
    parser.add_argument("--profile", "--configfile", dest="profile", default=None, metavar="NAME|FILE",
                        help="a budget profile: quick, medium, paper (config/<name>.yaml) or a file; default: the paper's")  # fmt: skip
    parser.add_argument("--settings", default={}, type=settings.json_object, help="resolved workflow config, JSON, over the profile")
    parser.add_argument("--executor", choices=list(executors.NAMES), default=None)
    parser.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    parser.add_argument("--continues", default=None, help="the stop of an earlier run it continues (default: the last summary's)")
    parser.add_argument("--cores", type=int, default=None, help="a local Ray runtime's CPUs, where ray.num_cpus is unset")
    parser.add_argument("--max-trials", type=int, default=os.environ.get(settings.MAX_TRIALS_ENV),
                        help=f"refuse a grid of more trials (default: {settings.MAX_TRIALS_ENV}, else config key max_trials)")  # fmt: skip
    parser.add_argument("--stop-after", default=None, metavar="DURATION",
                        help="a time limit, e.g. 90s, 8m, 1.5h: then every trial checkpoints and stops, and a rerun continues")  # fmt: skip
    parser.add_argument("--deadline", default=os.environ.get(DEADLINE_ENV),
                        help=f"the limit as a time.time() value (default: {DEADLINE_ENV}: a workflow's, for all its sweeps)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        config = settings.merge(settings.load_profile(args.profile), args.settings) if args.profile else args.settings
    except settings.SettingsError as exc:
        parser.error(str(exc))
    data_root = args.data or settings.with_defaults(config)["data"]["processed"]
    if "profile" not in config:  # a bare command line: say which budget, rather than start 200,000 iterations silently
        print(f"{Path(args.grid).stem}: no --profile given: the paper profile, each grid's own iterations and seeds "
              "(--profile quick or medium for a CPU)", file=sys.stderr)  # fmt: skip
    if args.max_trials is not None:
        config = settings.merge(config, {"max_trials": args.max_trials})
    try:  # checked as the workflow checks its config file, before any compute
        config = schema.validate(settings.with_defaults(config), schema.config_schema(), "--settings", settings.SettingsError)
    except settings.SettingsError as exc:
        parser.error(str(exc))  # resolved by sweep(), which a caller may use alone
    if args.cores and not config["ray"]["num_cpus"]:
        config = settings.merge(config, {"ray": {"num_cpus": args.cores}})
    executor = args.executor or config["executor"]
    request = GridStore(args.out, Path(args.grid).stem).stop_request(f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if args.stop_after:
            limit = Limit.after(args.stop_after, request, where="--stop-after")
        elif args.deadline:
            limit = Limit.at(args.deadline, request)
        else:
            limit = Limit.after(config["stop_after"], request, where="config key 'stop_after'")
    except ValueError as exc:
        parser.error(str(exc))
    # A job stopped by its scheduler ends like Ctrl-C (status 130, runs KILLED, checkpoints kept). In
    # one process every trial checkpoints at its next step first; under Ray the scheduler stops
    # Ray's own processes too, so the sweep ends at once on its trials' periodic checkpoints.
    if executor == "ray":
        interrupt.sigterm_interrupts()
    else:
        signal.signal(signal.SIGTERM, lambda *_: limit.request())
    try:
        sweep(args.grid, args.out, data_root, config, executor, track=not args.no_tracking, limit=limit, continues=args.continues)
    except (grids.GridError, tracking.TrackingError, FileNotFoundError, ValueError, ConnectionError, files.DiskFull, Unrecoverable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SweepStopped as exc:
        print(str(exc), file=sys.stderr)
        return 0
    except (KeyboardInterrupt, SweepInterrupted) as exc:
        resume = f"{Path(args.grid).stem}: run the same command again to resume its unfinished trials from their checkpoints"
        print(f"interrupted: {str(exc) or resume}", file=sys.stderr)  # a KeyboardInterrupt has no text
        return 130
    finally:
        limit.withdraw()
    return 0


if __name__ == "__main__":
    sys.exit(main())
