"""The Ray side of a sweep: joining a runtime, reporting from workers, tracking in the driver."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from ray import tune

from pipeline.trial import Reporter, read_record


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
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # ray raises ConnectionError or RuntimeError depending on how it fails
            raise ConnectionError(f"cannot join the Ray cluster at ray.address={address!r}: {exc}") from None
        return False
    # A runtime of this machine only: its servers listen on loopback, not every interface. Ray's
    # local-only mode (its default on macOS and Windows) does that; it reads this flag at import.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=ray_settings.get("num_cpus") or os.cpu_count(), include_dashboard=False, log_to_driver=False)
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
            shutil.copy(checkpoint, Path(tmp) / "checkpoint.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def restore(self):
        """Tune's last checkpoint of this trial (after a retry), else the trial's own file."""
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            path = Path(ckpt.to_directory()) / "checkpoint.pt"
            if path.is_file():
                return path
        return super().restore()


class TrackingCallback(tune.Callback):
    """Runs in the driver: the only MLflow writer, fed by every trial's results."""

    def __init__(self, tracker, out: str):
        self.tracker, self.out = tracker, Path(out)

    @staticmethod
    def _trial(trial):
        from pipeline.sweep import effective_trial

        return effective_trial(trial.config)

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        self.tracker.start_trial(t, {"split": "validation"} if t.get("validation_size") else None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._trial(trial)
        if "step" not in result or t["key"] not in self.tracker.runs:
            return
        per_member = [{} for _ in t["members"]]
        for name, value in result.items():
            if name.startswith("m") and "." in name and name[1 : name.index(".")].isdigit():
                k, metric = name[1:].split(".", 1)
                per_member[int(k)][metric] = value
        if any(per_member):
            self.tracker.log(t["key"], int(result["step"]), per_member)

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        record = read_record(self.out / "trials" / t["key"])
        if record is not None:
            self.tracker.finish_trial(t["key"], record, self.out / "trials" / t["key"])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.fail_trial(self._trial(trial)["key"])
