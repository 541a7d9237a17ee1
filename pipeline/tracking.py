"""MLflow: one experiment per grid, a parent run per sweep, a child run per trained model.

The driver is the only writer (Ray Tune callbacks and the inline executor both call into one
``Tracker``), which holds for an embedded sqlite store and a remote server alike. Every child
run carries the tag ``icstn.run_key`` (trial key / seed / sigma): a rerun finds it instead of
creating a duplicate, and an unfinished one is resumed rather than replaced.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_KEY = "icstn.run_key"
SWEEP_KEY = "icstn.sweep_key"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI."""


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the configured URI, else ``sqlite:///<repo>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{REPO / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, naming the URI, when a tracking server does not answer."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it, fix MLFLOW_TRACKING_URI, or run with --no-tracking"
        ) from None


def member_key(trial: dict, member: dict) -> str:
    return f"{trial['key']}/seed={member['seed']}/sigma={member['sigma_px']:g}"


def _flatten(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if not isinstance(obj, list) else ",".join(map(str, obj))
    return out


class Tracker:
    """Records one sweep of one grid. Call ``start_trial``, ``log``, ``finish_trial``."""

    def __init__(self, grid: dict, sweep_key: str, tags: dict, uri: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(uri)
        check_reachable(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        self.tags = {k: str(v) for k, v in tags.items()}
        try:
            exp = self.client.get_experiment_by_name(grid["name"])
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(grid["name"])
            # the MLflow UI then opens on the runs table, not its GenAI pages
            self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        except Exception as exc:
            raise TrackingError(f"cannot use the MLflow store {self.uri}: {exc}") from exc
        found = self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_KEY}` = '{sweep_key}'", max_results=1)
        if found:
            self.parent = found[0].info.run_id
        else:
            run = self.client.create_run(
                self.experiment_id, tags={SWEEP_KEY: sweep_key, "mlflow.runName": f"sweep {grid['name']}", **self.tags}
            )
            self.parent = run.info.run_id
            self.client.log_batch(self.parent, params=_params(_flatten("grid", grid, {})))
        self.runs: dict[str, list[str]] = {}  # trial key -> run id per member
        self.last_step: dict[str, int] = {}

    def _find(self, key: str):
        found = self.client.search_runs([self.experiment_id], f"tags.`{RUN_KEY}` = '{key}'", max_results=5)
        return found[0] if found else None

    def start_trial(self, trial: dict, extra_tags: dict | None = None) -> None:
        """Find or create the child run of every member of a trial."""
        ids = []
        for k, member in enumerate(trial["members"]):
            key = member_key(trial, member)
            existing = self._find(key)
            if existing is not None:
                run_id = existing.info.run_id
                if existing.info.status != "FINISHED":
                    self.client.update_run(run_id, "RUNNING")
                history = self.client.get_metric_history(run_id, "train_loss")
                self.last_step[run_id] = max((m.step for m in history), default=-1)
            else:
                tags = {
                    RUN_KEY: key,
                    "mlflow.parentRunId": self.parent,
                    "mlflow.runName": f"{trial['model']} seed={member['seed']} sigma={member['sigma_px']:g}",
                    "model": trial["model"],
                    **self.tags,
                    **(extra_tags or {}),
                }
                run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
                params = _flatten("", {**{k: v for k, v in trial.items() if k != "members"}, **member, "member_index": k}, {})
                self.client.log_batch(run_id, params=_params(params))
                self.last_step[run_id] = -1
            ids.append(run_id)
        self.runs[trial["key"]] = ids

    def log(self, trial_key: str, step: int, per_member: list[dict]) -> None:
        """Log metrics at ``step``, one dict per member (skipping steps a resumed run already has)."""
        from mlflow.entities import Metric

        for run_id, values in zip(self.runs[trial_key], per_member):
            if "train_loss" in values and step <= self.last_step[run_id]:
                continue
            metrics = [Metric(name, float(v), 0, step) for name, v in values.items() if v is not None]
            self.client.log_batch(run_id, metrics=metrics)
            if "train_loss" in values:
                self.last_step[run_id] = step

    def finish_trial(self, trial_key: str, record: dict, trial_dir: Path) -> None:
        from mlflow.entities import Metric

        for k, run_id in enumerate(self.runs[trial_key]):
            member = record["members"][k]
            metrics = [Metric(f"final_{n}", float(v), 0, record["iterations"]) for n, v in member["metrics"].items()]
            metrics += [Metric("test_error_by_warps", float(v), 0, int(n)) for n, v in member.get("test_warps", {}).items()]
            self.client.log_batch(run_id, metrics=metrics, tags=[_tag("device", record["device"])])
            member_dir = trial_dir / f"member{k}"
            if member_dir.is_dir():
                self.client.log_artifacts(run_id, str(member_dir))
            self.client.set_terminated(run_id, "FINISHED")

    def fail_trial(self, trial_key: str) -> None:
        for run_id in self.runs.get(trial_key, []):
            self.client.set_terminated(run_id, "FAILED")

    def finish_sweep(self, summary: dict) -> None:
        """Summary as tags (a rerun may overwrite them; params are write-once)."""
        self.client.log_batch(self.parent, tags=[_tag(f"sweep.{k}", v) for k, v in _flatten("", summary, {}).items()])
        self.client.set_terminated(self.parent, "FINISHED")


def _params(flat: dict):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in flat.items()]


def _tag(key: str, value) -> object:
    from mlflow.entities import RunTag

    return RunTag(key, str(value))
