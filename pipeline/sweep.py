"""Run one grid: trials on Ray Tune (or inline), every model in MLflow, a tidy parquet out.

    python -m pipeline.sweep --grid config/grids/table2.yaml --out results \
        [--data data/processed] [--settings JSON] [--executor ray|inline] [--no-tracking]

``--settings`` is the resolved workflow config (profile, budget, ray, device, tracking) as JSON.
Outputs: ``<out>/<grid>/trials/<key>/`` per trial, ``<out>/<grid>.parquet``.

Resuming: a trial whose ``record.json`` exists is done and is never retrained. An unfinished
trial resumes from its last checkpoint, whether it was interrupted (killed driver) or its
worker died (Ray retries it, ``FailureConfig``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from icstn.data import read_manifest
from pipeline import grids, results, tracking
from pipeline.files import write_json
from pipeline.provenance import git_commit
from pipeline.trial import Reporter, read_record, run_trial, with_overrides

DEFAULTS = {
    "profile": "paper",
    "budget": {},
    "device": "cpu",
    "pack": "auto",
    "cuda_graph": True,
    "tracking": {"enabled": True, "uri": None},
    "ray": {"address": None, "num_cpus": None, "cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 2},
}


class SweepInterrupted(RuntimeError):
    """Trials were stopped before they finished (Ctrl-C, SIGTERM); a rerun resumes them."""


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


# --- executors ------------------------------------------------------------------------------
def run_inline(trials: list[dict], ctx: dict, tracker) -> None:
    """The same trials, one after another in this process, with no Ray."""
    for i, trial in enumerate(trials, 1):
        print(f"[{i}/{len(trials)}] {trial['model']} ({len(trial['members'])} models)", file=sys.stderr, flush=True)
        trial_dir = Path(ctx["out"]) / "trials" / trial["key"]
        on_result = None
        if tracker is not None:
            tracker.start_trial(trial)
            on_result = lambda step, per_member, key=trial["key"]: tracker.log(key, step, per_member)  # noqa: E731
        record = run_trial(trial, ctx, Reporter(trial_dir, on_result))
        if tracker is not None:
            tracker.finish_trial(trial["key"], record, trial_dir)


def _objective(record: dict) -> float:
    errors = [m["metrics"]["test_error"] for m in record["members"]]
    return sum(errors) / len(errors)


def _tune_trainable(config: dict) -> None:
    """Ray Tune worker: one trial (search settings applied), reported back to the driver."""
    import ray
    import torch
    from ray import tune

    from pipeline.ray_reporting import TuneReporter

    ctx = config["ctx"]
    trial = effective_trial(config)
    torch.set_num_threads(max(1, int(ctx["threads"])))
    trial_dir = Path(ctx["out"]) / "trials" / trial["key"]
    where = {"ray_node": ray.get_runtime_context().get_node_id()}
    record = read_record(trial_dir) or run_trial(trial, ctx, TuneReporter(trial_dir), where)
    tune.report({"objective": _objective(record), "done_step": record["iterations"]})


def effective_trial(config: dict) -> dict:
    """The trial a Tune config stands for: a grid trial, plus sampled search settings."""
    return grids.rekey(with_overrides(config["trial"], **config["search"])) if config.get("search") else config["trial"]


def run_ray(trials: list[dict], ctx: dict, settings: dict, tracker, name: str, search: dict | None = None):
    """Fan the trials out on Ray Tune (local cores, a GPU, or a cluster at ``ray.address``)."""
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from pipeline.ray_reporting import TrackingCallback, connect

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the loggers are named below
    owned = connect(settings["ray"])
    res = {"cpu": settings["ray"]["cpus_per_trial"], "gpu": settings["ray"]["gpus_per_trial"]}
    try:
        check_resources(res)
    except ValueError:
        if owned:
            ray.shutdown()
        raise
    trainable = tune.with_resources(_tune_trainable, res)
    tune_config = tune.TuneConfig()
    param_space = {"ctx": {**ctx, "threads": res["cpu"]}}
    if search is None:
        param_space["trial"] = tune.grid_search(trials)
    else:
        from ray.tune.search.optuna import OptunaSearch

        param_space |= {"trial": trials[0], "search": search["space"]}
        tune_config = tune.TuneConfig(
            search_alg=OptunaSearch(seed=0), metric="objective", mode="min", num_samples=search["num_samples"], max_concurrent_trials=None
        )
    run_config = tune.RunConfig(
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(Path(ctx["out"]).resolve() / "ray"),
        failure_config=tune.FailureConfig(max_failures=settings["ray"]["max_failures"]),
        # Tune's JSON and CSV records, without its TensorBoard files (MLflow is the record)
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()] + ([TrackingCallback(tracker, ctx["out"])] if tracker is not None else []),
        verbose=1,
    )
    try:
        grid_result = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()
    finally:
        if owned:
            ray.shutdown()  # a runtime we started; never a cluster we joined
    errors = [r.error for r in grid_result if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed after retries; first: {errors[0]}")
    if search is not None:
        best = grid_result.get_best_result(metric="objective", mode="min")
        return {**best.config["search"], "objective": best.metrics["objective"]}
    return None


def search_inline(trial: dict, ctx: dict, search: dict) -> dict:
    """Optuna directly, without Ray: the same space, validation objective and sampler seed."""
    import optuna

    def objective(ot):
        overrides = {k: ot.suggest_float(k, r["low"], r["high"], log=r.get("log", True)) for k, r in search["space"].items()}
        config = {"trial": trial, "search": overrides}
        eff = effective_trial(config)
        return _objective(read_record(Path(ctx["out"]) / "trials" / eff["key"]) or run_trial(eff, ctx))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=search["num_samples"])
    return {**study.best_params, "objective": study.best_value}


def tune_space(space: dict) -> dict:
    from ray import tune

    return {k: (tune.loguniform if r.get("log", True) else tune.uniform)(r["low"], r["high"]) for k, r in space.items()}


# --- the sweep ------------------------------------------------------------------------------
def sweep(grid_path: str | Path, out: str | Path, data_root: str | Path, settings: dict, executor: str = "ray", track: bool = True) -> Path:
    """Run every unfinished trial of a grid and write ``<out>/<grid>.parquet``; returns its path."""
    settings = merge(DEFAULTS, settings)
    check_device(settings, executor)
    grid = grids.load_grid(grid_path, settings["budget"])
    data_root = Path(data_root).resolve()
    read_manifest(data_root, grid["experiment"])  # fail before any compute if the data is not prepared
    grid_out = Path(out).resolve() / grid["name"]
    ctx = {"data": str(data_root), "out": str(grid_out), "device": settings["device"], "cuda_graph": settings["cuda_graph"]}
    trials = grids.expand(grid, grids.models_per_trial(settings["pack"], settings["device"]))
    sweep_key = grids.digest([t["key"] for t in trials])
    tracker = None
    if track and settings["tracking"]["enabled"]:
        tags = {"profile": settings["profile"], "git_commit": git_commit(), "executor": executor}
        tracker = tracking.Tracker(grid, sweep_key, tags, settings["tracking"]["uri"])
    try:
        path = _run(grid, trials, ctx, settings, executor, tracker, Path(out))
    except BaseException as exc:  # no MLflow run of a failed or interrupted sweep stays RUNNING
        if tracker is not None:
            tracker.abort("KILLED" if isinstance(exc, KeyboardInterrupt | SweepInterrupted) else "FAILED")
        raise
    return path


def _run(grid: dict, trials: list[dict], ctx: dict, settings: dict, executor: str, tracker, out: Path) -> Path:
    grid_out = Path(ctx["out"])
    start = time.perf_counter()
    summary = {"profile": settings["profile"], "executor": executor}
    if "search" in grid:
        best = _search(grid, trials, ctx, settings, executor, tracker)
        trials = [grids.rekey(with_overrides(t, **{k: v for k, v in best.items() if k != "objective"})) for t in trials]
        summary["best"] = best
    todo = [t for t in trials if read_record(grid_out / "trials" / t["key"]) is None]
    for t in todo:  # a damaged checkpoint would fail every retry: say so before any compute
        check_checkpoint(grid_out / "trials" / t["key"] / "checkpoint.pt")
    print(f"{grid['name']}: {len(trials)} trials, {len(trials) - len(todo)} already done, {len(todo)} to run", file=sys.stderr, flush=True)
    if todo:
        run_inline(todo, ctx, tracker) if executor == "inline" else run_ray(todo, ctx, settings, tracker, grid["name"])
    unfinished = [t["key"] for t in trials if read_record(grid_out / "trials" / t["key"]) is None]
    if unfinished:  # Tune stops its trials on SIGINT and returns as if done
        raise SweepInterrupted(
            f"{grid['name']}: interrupted with {len(unfinished)} of {len(trials)} trials unfinished; "
            "run the same command again to resume them from their checkpoints"
        )
    df = results.collect(grid_out / "trials", [t["key"] for t in trials], settings["profile"])
    path = results.write(df, out / f"{grid['name']}.parquet")
    summary |= {"trials": len(trials), "trained": len(todo), "seconds": round(time.perf_counter() - start, 1)}
    write_json(grid_out / "sweep.json", summary)
    if tracker is not None:
        tracker.finish_sweep(summary)
    print(f"{grid['name']}: {len(df)} rows -> {path} ({summary['seconds']} s)", file=sys.stderr)
    return path


def _search(grid: dict, trials: list[dict], ctx: dict, settings: dict, executor: str, tracker) -> dict:
    """Optuna over the grid's search space, on a validation holdout of the training set."""
    search = grid["search"]
    first = {**trials[0], "members": [m for m in trials[0]["members"] if m["sigma_px"] == grid["sigma_px"][0]]}
    first = grids.rekey({**first, "validation_size": search["validation_size"]})
    print(
        f"{grid['name']}: Optuna search, {search['num_samples']} samples, validation holdout of {search['validation_size']}",
        file=sys.stderr,
    )
    if executor == "inline":
        best = search_inline(first, ctx, search)
    else:
        best = run_ray([first], ctx, settings, tracker, f"{grid['name']}-search", {**search, "space": tune_space(search["space"])})
    write_json(Path(ctx["out"]) / "best.json", {"model": first["model"], "split": "validation", **best})
    return best


def check_device(settings: dict, executor: str) -> None:
    """ValueError, before any compute, for a device the trials could not use."""
    import torch

    device = settings["device"]
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"config key 'device': {device!r} is not a torch device; allowed: cpu, cuda, cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"config key 'device': {device!r} is not supported; allowed: cpu, cuda, cuda:N")
    if kind == "cuda" and executor == "ray" and not settings["ray"]["gpus_per_trial"] > 0:
        # Ray hides every GPU from a trial that asks for none (CUDA_VISIBLE_DEVICES='')
        raise ValueError(
            "config key 'ray.gpus_per_trial' is 0 but 'device' is cuda: give each trial a GPU or a share of one (e.g. 1 or 0.25)"
        )
    if kind == "cuda" and executor == "inline" and not torch.cuda.is_available():
        raise ValueError(
            f"config key 'device' is {device!r}, but this machine has no CUDA device torch can use (torch {torch.__version__})"
        )


def check_resources(per_trial: dict) -> None:
    """ValueError, before Tune starts, when no node of the Ray runtime can hold one trial: Tune would wait forever."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for kind, key in (("GPU", "gpu"), ("CPU", "cpu")):
        want, largest = per_trial[key], max((n.get(kind, 0) for n in nodes), default=0)
        if want > largest:
            total = sum(n.get(kind, 0) for n in nodes)
            raise ValueError(
                f"config key 'ray.{key}s_per_trial' asks {want:g} {kind}(s) per trial, but the Ray runtime offers {total:g} "
                f"on {len(nodes)} node(s), at most {largest:g} on one: lower it, or run where there are {kind}s"
                + (" ('device: cpu' trains without one)" if kind == "GPU" else "")
            )


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
    parser.add_argument("--settings", default="{}", help="resolved workflow config, JSON")
    parser.add_argument("--executor", choices=["ray", "inline"], default=None)
    parser.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    executor = args.executor or settings.get("executor", "ray")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a job killed by its scheduler ends like Ctrl-C
    try:
        sweep(args.grid, args.out, args.data, settings, executor, track=not args.no_tracking)
    except (grids.GridError, tracking.TrackingError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SweepInterrupted) as exc:
        print(f"interrupted: {exc or 'run the same command again to resume'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
