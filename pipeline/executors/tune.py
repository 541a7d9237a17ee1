"""The Ray Tune executor: trials fanned out on local cores, a GPU, or a Ray cluster.

The driver (this process) is the only MLflow writer: workers report through Tune, and a Tune
callback here relays their results to the tracker. A worker that dies is retried from its last
checkpoint (``ray.max_failures``); a trial already recorded is never trained again. An error that
no retry mends (``runner.UNRECOVERABLE``: a full disk) stops every trial at once, retrying none.

Tune creates a trial only when the runtime has room to start it, and none once the sweep's limit
is reached; a running trial then checkpoints and returns unfinished (``pipeline.stop``).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune
from ray.tune.search import BasicVariantGenerator, SearchGenerator

from icstn.train import Stopped
from pipeline import interrupt
from pipeline.files import quiet_disk_full
from pipeline.progress import Progress
from pipeline.runner import UNRECOVERABLE, Context, Reporter, Unrecoverable, run_trial
from pipeline.settings import gpu_share
from pipeline.stop import Limit, LimitReached
from pipeline.trial import Trial

if TYPE_CHECKING:
    from pipeline.grids import Search

FATAL = "fatal"  # the metric a trial reports an error under that no retry mends


# --- the runtime --------------------------------------------------------------------------------
def connect(ray_settings: dict) -> bool:
    """Start a local Ray runtime with the job's cores, or join the cluster at ``ray.address``.

    Returns True when this call started (and so owns) a local runtime.
    """
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return False
    address = ray_settings.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        _probe(address)
        try:
            with interrupt.kept_through_ray_init():
                ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # ray raises ConnectionError or RuntimeError depending on how it fails
            raise ConnectionError(f"cannot join the Ray cluster at ray.address={address!r}: {exc}") from None
        return False
    # A runtime of this machine only: its servers listen on loopback, not every interface. Ray's
    # local-only mode (its default on macOS and Windows) does that; it reads this flag at import.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray turns token authentication on for a new local runtime (a user's RAY_AUTH_MODE stands),
    # and says so in a WARNING at every sweep: the choice is made, so that one line is not shown.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Tune gives every trial a runtime env (env_vars), and Ray starts a worker with one through
    # `bash -c "exec <interpreter> ..."`, the interpreter's path unquoted: in a folder whose path
    # holds a space, every trial's worker fails to start, and Tune waits for minutes. The
    # interpreter Ray runs is a shell command by design (runtime env `py_executable`): quoted here.
    python = shlex.quote(sys.executable)
    runtime_env = {"py_executable": python} if python != sys.executable else None
    # address="local": without it, ray.init joins the cluster named in <ray temp dir>/ray_current_cluster,
    # which a `ray start` on this machine writes (and a killed one leaves behind).
    try:
        with interrupt.kept_through_ray_init():
            ray.init(address="local", num_cpus=ray_settings.get("num_cpus") or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False, runtime_env=runtime_env)  # fmt: skip
    except BaseException:
        ray.shutdown()  # whatever part of the runtime had started
        raise
    return True


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the address, where ray.init would wait minutes for a GCS."""
    if address == "auto" or "://" in address:
        return  # 'auto' finds a local cluster itself; ray:// clients report their own errors
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(
            f"no Ray cluster answers at ray.address={address!r} ({exc}); start one with `ray start --head`, "
            "or unset ray.address / RAY_ADDRESS to run on local cores"
        ) from None


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


def slots(per_trial: dict) -> int:
    """How many trials the Ray runtime's nodes hold at once."""
    import ray

    total = 0
    for node in (n["Resources"] for n in ray.nodes() if n.get("Alive")):
        fits = [node.get(kind, 0) / per_trial[key] for kind, key in (("CPU", "cpu"), ("GPU", "gpu")) if per_trial[key]]
        total += math.floor(min(fits) + 1e-9)
    return max(1, total)


# --- in the worker ------------------------------------------------------------------------------
def _trial_of(config: dict) -> Trial:
    """The trial a Tune config stands for: a grid trial, plus a search's sampled settings."""
    return Trial.from_dict(config["trial"]).with_overrides(**config.get("search", {}))


class TuneReporter(Reporter):
    """Inside a Tune worker: metrics and checkpoints go to Tune, which relays them to the driver."""

    objective = float("inf")  # mean test (or validation) error at the last evaluation

    def report(self, step, per_member, checkpoint=None):
        errors = [row["test_error"] for row in per_member if "test_error" in row]
        if errors:
            self.objective = sum(errors) / len(errors)
        metrics = {"step": step, "objective": self.objective}
        metrics |= {f"m{k}.{name}": v for k, row in enumerate(per_member) for name, v in row.items()}
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:  # Tune copies the folder into its storage
            shutil.copy(checkpoint, Path(tmp) / checkpoint.name)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def resume(self, trainer) -> bool:
        """From Tune's last checkpoint of this trial (after a retry), else from the trial's own file."""
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            # as_directory, not to_directory: a copy it had to make is removed on leaving (to_directory's stayed in /tmp)
            with ckpt.as_directory() as folder:
                path = Path(folder) / self.store.checkpoint(self.key).name
                if path.is_file():
                    trainer.load(path)
                    return True
        return super().resume(trainer)


def _trainable(config: dict) -> None:
    """Ray Tune worker: one trial (search settings applied), reported back to the driver."""
    import ray
    import torch

    ctx = Context.from_dict(config["ctx"])
    if ctx.limit.reached():
        return  # started after the limit (the runtime had room for one more than Tune was told): not started
    trial = _trial_of(config)
    torch.set_num_threads(max(1, int(ctx.threads)))
    where = {"ray_node": ray.get_runtime_context().get_node_id()}
    reporter = TuneReporter(ctx.store(trial), trial.key)
    try:
        record = run_trial(trial, ctx, reporter, where)
    except Stopped as stopped:
        tune.report({"objective": reporter.objective, "stopped_at": stopped.step})
        return
    except UNRECOVERABLE as exc:  # reported, not raised: Tune retries every error, up to ray.max_failures times
        tune.report({FATAL: str(exc), "objective": TuneReporter.objective})  # a search's every result holds its metric
        return
    tune.report({"objective": record.objective, "done_step": record.iterations})


# --- in the driver ------------------------------------------------------------------------------
class StopOnFatal(tune.Stopper):
    """Stops every trial once one reports an error that no retry mends (``FATAL``)."""

    def __init__(self):
        self.fatal = False

    def __call__(self, trial_id, result) -> bool:
        self.fatal = self.fatal or FATAL in result
        return FATAL in result

    def stop_all(self) -> bool:
        return self.fatal


class DriverCallback(tune.Callback):
    """Runs in the driver: the sweep's progress lines (``pipeline.progress``, in place of Tune's
    tables) and, with a tracker, the only MLflow writer, fed by every trial's results."""

    def __init__(self, ctx: Context, progress: Progress, tracker=None):
        self.ctx, self.progress, self.tracker = ctx, progress, tracker
        self.late: set[str] = set()  # trials that started after the limit: they return at once, untrained

    def on_trial_start(self, iteration, trials, trial, **info):
        t = _trial_of(trial.config)
        if self.ctx.limit.reached():
            self.late.add(t.key)
            return
        self.progress.started(t)
        if self.tracker is not None:
            self.tracker.start_trial(t)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" not in result:
            return
        t, step = _trial_of(trial.config), int(result["step"])
        self.progress.step(t.key, step)
        if self.tracker is None or t.key not in self.tracker.runs:
            return
        per_member = [{} for _ in t.members]
        for name, value in result.items():
            if name.startswith("m") and "." in name and name[1 : name.index(".")].isdigit():
                k, metric = name[1:].split(".", 1)
                per_member[int(k)][metric] = value
        if any(per_member):
            self.tracker.log(t.key, step, per_member)

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = _trial_of(trial.config)
        store = self.ctx.store(t)
        record = store.record(t.key)
        if record is not None:
            self.progress.finished(record)
            if self.tracker is not None:
                self.tracker.finish_trial(record, store)
        elif "stopped_at" in (trial.last_result or {}) and t.key not in self.late:
            self.progress.stopped(t, int(trial.last_result["stopped_at"]))

    def on_trial_error(self, iteration, trials, trial, **info):
        t = _trial_of(trial.config)
        self.progress.failed(t, f"see {trial.local_path or 'the Ray log'}")
        if self.tracker is not None:
            self.tracker.fail_trial(t.key)


class _UntilLimit:
    """Mixed into a Tune search algorithm: it creates no trial once the sweep's limit is reached."""

    limit: Limit

    def next_trial(self):
        if self.limit.reached():
            self.set_finished()
            return None
        return super().next_trial()


class _Grid(_UntilLimit, BasicVariantGenerator):
    """The grid's trials, each created when the runtime has room for it (``max_concurrent``)."""


class _Search(_UntilLimit, SearchGenerator):
    """A searcher's samples."""


def _until(algorithm, limit: Limit):
    algorithm.limit = limit
    return algorithm


def _dirname(trial) -> str:
    """Tune's folder of a trial: the trial's key (its folder in the store), not its whole config."""
    return f"{_trial_of(trial.config).key}_{trial.trial_id}"


def _no_restore_hint(record: logging.LogRecord) -> bool:
    """Drop Tune's 'Resume experiment with: Tuner.restore(...)' on an interruption: a sweep resumes by
    running the same command again, which the sweep's own last line says."""
    return "Tuner.restore(" not in record.getMessage()


def _tune(trials: list[Trial], ctx: Context, settings: dict, tracker, name: str, search: Search | None = None, trainable=_trainable):
    """Run ``trials`` on Tune (or, with ``search``, Optuna's samples of the first); returns the ResultGrid.
    ``trainable(config)`` runs one trial in a worker (``_trainable``)."""
    import ray
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the loggers are named below
    # Tune's newer console output prints its experiment box and folder even at verbose=0: keep the one
    # whose verbose=0 is silent, so that DriverCallback's lines are the sweep's whole story
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.setLevel(logging.WARNING)  # its INFO line names Tune's own state files at the end
    tune_log.addFilter(_no_restore_hint)
    quiet_disk_full("ray.train._internal.syncer", "ray.tune.execution.experiment_state")  # its uploads to a full disk fail too
    owned = connect(settings["ray"])
    total = len(trials) if search is None else search.num_samples
    gpus = ray.cluster_resources().get("GPU", 0)  # of every node: a cluster's trials spread over all of them
    res = {"cpu": settings["ray"]["cpus_per_trial"], "gpu": gpu_share(settings["ray"]["gpus_per_trial"], total, gpus)}
    try:
        check_resources(res)
        param_space = {"ctx": {**ctx.to_dict(), "threads": res["cpu"]}}
        if search is None:
            param_space["trial"] = tune.grid_search([t.to_dict() for t in trials])
            # a trial is created only when it can start, so that none is waiting when the limit is reached
            search_config = {"search_alg": _until(_Grid(max_concurrent=slots(res)), ctx.limit)}
        else:
            from ray.tune.search.optuna import OptunaSearch

            space = {k: (tune.loguniform if r["log"] else tune.uniform)(r["low"], r["high"]) for k, r in search.space.items()}
            param_space |= {"trial": trials[0].to_dict(), "search": space}
            search_config = {"search_alg": _until(_Search(OptunaSearch(seed=0)), ctx.limit), "metric": "objective", "mode": "min",
                             "num_samples": search.num_samples}  # fmt: skip
        tune_config = tune.TuneConfig(trial_dirname_creator=_dirname, **search_config)
        run_config = tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(ctx.store(trials[0]).tune_storage),
            failure_config=tune.FailureConfig(max_failures=settings["ray"]["max_failures"]),
            stop=StopOnFatal(),
            # Tune's JSON and CSV records, without its TensorBoard files (MLflow is the record)
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), DriverCallback(ctx, Progress(name, total), tracker)],
            verbose=0,  # DriverCallback prints what matters; Tune's tables would repeat each config
        )
        grid_result = tune.Tuner(tune.with_resources(trainable, res), param_space=param_space, tune_config=tune_config,
                                 run_config=run_config).fit()  # fmt: skip
    except KeyboardInterrupt:  # SIGTERM (pipeline.interrupt), or a second Ctrl-C
        # Runs KILLED first: a scheduler's SIGTERM stops Ray's own processes too, a shutdown of
        # what is left takes seconds, and the scheduler's SIGKILL may come next
        if tracker is not None:
            tracker.abort("KILLED")
        raise
    finally:
        if owned:
            ray.shutdown()  # a runtime we started; never a cluster we joined
    fatal = [r.metrics[FATAL] for r in grid_result if FATAL in (r.metrics or {})]
    if fatal:
        raise Unrecoverable(fatal[0])
    errors = [r.error for r in grid_result if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed after retries; first: {errors[0]}")
    return grid_result


def run(trials: list[Trial], ctx: Context, settings: dict, tracker=None) -> None:
    _tune(trials, ctx, settings, tracker, trials[0].grid)


def search(trial: Trial, ctx: Context, settings: dict, tracker, search: Search) -> dict:
    """OptunaSearch on Tune: ``search.num_samples`` samples of ``trial``, the best by validation error."""
    results = _tune([trial], ctx, settings, tracker, f"{trial.grid}-search", search)
    done = [r for r in results if r.metrics and "done_step" in r.metrics]
    if len(done) < search.num_samples:  # stopped at the limit (or interrupted): no best of some of the samples
        raise LimitReached(f"the search of {trial.model} stopped with {len(done)} of {search.num_samples} samples done")
    best = results.get_best_result(metric="objective", mode="min")
    return {**best.config["search"], "objective": best.metrics["objective"]}
