"""MLflow: one experiment per grid, a parent run per sweep, a child run per trained model.

The driver is the only writer (Ray Tune callbacks and the inline executor both call into one
``Tracker``), which holds for an embedded sqlite store and a remote server alike. Every child
run carries the tag ``icstn.run_key`` (trial key / seed / sigma), and every run the id of the
results store it mirrors (``icstn.store``): a rerun finds its own runs instead of creating
duplicates, and resumes an unfinished one rather than replacing it, while the runs of another
checkout on a shared tracking server, with the same grid and keys, are never touched.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.store import GridStore
from pipeline.trial import Trial, TrialRecord

if TYPE_CHECKING:
    from pipeline.grids import Grid

REPO = Path(__file__).resolve().parents[1]
RUN_KEY = "icstn.run_key"
ADVICE = "fix it, point MLFLOW_TRACKING_URI elsewhere, or run with --no-tracking"
SWEEP_KEY = "icstn.sweep_key"
CURVES = ("train_loss", "test_error")  # a training log's metric, and an evaluation's (the learning curve)
STORE_KEY = "icstn.store"  # the results store's id (GridStore.identity)
STORE_PATH = "icstn.store_path"  # host:folder of that store, for a person telling checkouts apart
BATCH = 1000  # the most metrics MLflow takes in one log_batch


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


def sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///") :].split("?")[0]


def check_sqlite(uri: str) -> None:
    """Open an sqlite store directly: MLflow would retry an unopenable file for minutes, then print pages."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3
    from contextlib import closing

    path = sqlite_path(uri)
    try:
        with closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        raise TrackingError(f"cannot use the MLflow store {uri}: {exc}; {ADVICE}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(") ", 1)[1] if text.startswith("(") and ") " in text else text  # drop sqlalchemy's "(sqlite3.Error)"


def open_store(uri: str):
    """An MlflowClient on ``uri``, or one TrackingError line naming the store and what is wrong."""
    import mlflow
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    check_sqlite(uri)
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # opens (and for sqlite, creates or migrates) the store
    except Exception as exc:  # sqlalchemy, sqlite3, REST and MLflow errors alike
        raise TrackingError(f"cannot use the MLflow store {uri}: {_first_line(exc)}; {ADVICE}") from None
    return client


def experiment(client, name: str) -> str:
    """The id of experiment ``name``, created if new, set to open on its runs table in the MLflow UI."""
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:
        raise TrackingError(f"cannot use the MLflow store {client.tracking_uri}: {_first_line(exc)}") from None
    if exp is not None and exp.lifecycle_stage == "deleted":  # MLflow would refuse every run of it, unhelpfully
        raise TrackingError(_deleted(client.tracking_uri, name, exp.experiment_id))
    try:
        experiment_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_location(client, name))
        client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    except Exception as exc:
        raise TrackingError(f"cannot use the MLflow store {client.tracking_uri}: {_first_line(exc)}") from None
    return experiment_id


def _deleted(uri: str, name: str, experiment_id: str) -> str:
    """What to do when the store holds the grid's experiment deleted (in its trash, where its name stays taken)."""
    store = shlex.quote(uri)
    return (
        f"the MLflow experiment {name!r} (id {experiment_id}) of the store {uri} is deleted; restore it, in the MLflow UI or with "
        f"MLFLOW_TRACKING_URI={store} mlflow experiments restore --experiment-id {experiment_id}, or delete it for good (its runs "
        f"too) with mlflow gc --backend-store-uri {store} --experiment-ids {experiment_id}; then run again"
    )


def artifact_location(client, name: str) -> str | None:
    """Beside an sqlite store, ``<its folder>/mlruns/<experiment>``: MLflow's default, ``./mlruns/<id>``,
    follows the working directory, so two stores used from one folder would share (and mix) it."""
    uri = client.tracking_uri
    return (Path(sqlite_path(uri)).resolve().parent / "mlruns" / name).as_uri() if uri.startswith("sqlite:///") else None


def runs_url(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment's runs table, in the UI's "Model training" view. MLflow
    3.17's UI takes its mode from the URL's ``workflowType`` (after the fragment), else the browser's
    storage, else "genai": without it, the page opens as GenAI evaluations (benchmarks/mlflow_view.py)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def where(uri: str, experiment_id: str) -> str:
    """An experiment's runs page: on the tracking server, or on the ``mlflow ui`` of a local store."""
    if uri.startswith(("http://", "https://")):
        return runs_url(experiment_id, uri)
    return f"{runs_url(experiment_id)} (start `mlflow ui --backend-store-uri {uri}` first)"


def _flatten(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if not isinstance(obj, list) else ",".join(map(str, obj))
    return out


class Tracker:
    """Records one sweep of one grid. Call ``start_trial``, ``log``, ``finish_trial``."""

    def __init__(self, grid: Grid, store: GridStore, sweep_key: str, tags: dict, uri: str | None = None, earlier_key: str | None = None):
        self.uri = tracking_uri(uri)
        self.client = open_store(self.uri)
        self.store, self.store_id = store, store.identity()
        self.tags = {k: str(v) for k, v in tags.items()} | {STORE_KEY: self.store_id, STORE_PATH: f"{socket.gethostname()}:{store.root}"}
        self.name, self.experiment_id = grid.name, experiment(self.client, grid.name)
        found = self._search(SWEEP_KEY, sweep_key) or (self._search(SWEEP_KEY, earlier_key) if earlier_key else None)
        if found is not None:  # its run, or the run of its trials under an earlier version's keys (pipeline.migrate)
            self.parent = found.info.run_id
            self.client.set_tag(self.parent, SWEEP_KEY, sweep_key)
            self.client.update_run(self.parent, "RUNNING")  # a rerun finishes what a failed or killed sweep left
            self.client.log_batch(self.parent, tags=[_tag(k, v) for k, v in self.tags.items()])  # this sweep's commit, profile
        else:
            # one grid name may hold other content, and other checkouts: the name tells their parents apart
            name = f"sweep {grid.name} grid={sweep_key[:6]} store={self.store_id[:6]}"
            run = self.client.create_run(self.experiment_id, tags={SWEEP_KEY: sweep_key, "mlflow.runName": name, **self.tags})
            self.parent = run.info.run_id
            self.client.log_batch(self.parent, params=_params(_flatten("grid", grid.to_dict(), {})))
        self.runs: dict[str, list[str]] = {}  # trial key -> run id per member
        # run id -> the last step it has of the training-loss curve and of the test curve: a trial
        # rerun from its last checkpoint (or from scratch) repeats steps the run already has
        self.last_step: dict[str, dict[str, int]] = {}

    def _search(self, tag: str, value: str):
        """This store's newest run tagged ``tag`` = ``value``, or None: never another store's."""
        query = f"tags.`{STORE_KEY}` = '{self.store_id}' and tags.`{tag}` = '{value}'"
        found = self.client.search_runs([self.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
        return found[0] if found else None

    def _earlier_run(self, trial: Trial, k: int):
        """Member k's run made under an earlier version's key of its trial (``GridStore.aliases``), or, in a
        local store, before runs carried the store's id; tagged with the current ones. None if there is none."""
        earlier = self.store.aliases().get(trial.key, [])
        for old in earlier:
            found = self._search(RUN_KEY, trial.member_key(k, old))
            if found is not None:
                break
        else:
            found = None
            if self.uri.startswith("sqlite:///"):  # one checkout's own store: an untagged run can be no other store's
                for key in [trial.member_key(k), *(trial.member_key(k, old) for old in earlier)]:
                    query = f"tags.`{RUN_KEY}` = '{key}'"
                    runs = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"])
                    found = next((r for r in runs if STORE_KEY not in r.data.tags), None)
                    if found is not None:
                        break
        if found is not None:
            tags = {RUN_KEY: trial.member_key(k), STORE_KEY: self.store_id, STORE_PATH: self.tags[STORE_PATH]}
            self.client.log_batch(found.info.run_id, tags=[_tag(k, v) for k, v in tags.items()])
        return found

    def start_trial(self, trial: Trial) -> None:
        """Find or create the child run of every member of a trial (a search trial's tagged split=validation)."""
        ids = []
        for k, member in enumerate(trial.members):
            key = trial.member_key(k)
            existing = self._search(RUN_KEY, key) or self._earlier_run(trial, k)
            if existing is not None and existing.info.status == "FINISHED" and not self.store.done(trial.key):
                existing = None  # its record was deleted: the retrained trial's result gets a run of its own
            if existing is not None:
                run_id = existing.info.run_id
                if existing.info.status != "FINISHED":
                    self.client.update_run(run_id, "RUNNING")
                self.last_step[run_id] = {curve: max((m.step for m in self.client.get_metric_history(run_id, curve)), default=-1)
                                          for curve in CURVES}  # fmt: skip
            else:
                name = " ".join(filter(None, (trial.model, trial.settings, f"seed={member.seed} sigma={member.sigma_px:g}")))
                tags = {
                    RUN_KEY: key,
                    "mlflow.parentRunId": self.parent,
                    "mlflow.runName": name,
                    "model": trial.model,
                    **self.tags,
                    **({"split": "validation"} if trial.validation_size else {}),
                }
                run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
                described = {k: v for k, v in trial.to_dict().items() if k not in ("members", "shown")} | {"key": trial.key}
                params = _flatten("", {**described, "seed": member.seed, "sigma_px": member.sigma_px, "member_index": k}, {})
                self.client.log_batch(run_id, params=_params(params))
                self.last_step[run_id] = dict.fromkeys(CURVES, -1)
            ids.append(run_id)
        self.runs[trial.key] = ids

    def log(self, trial_key: str, step: int, per_member: list[dict]) -> None:
        """Log metrics at ``step``, one dict per member (skipping the steps of a curve that a resumed run already has)."""
        from mlflow.entities import Metric

        for run_id, values in zip(self.runs[trial_key], per_member):
            curve = next((c for c in CURVES if c in values), None)
            if curve is not None and step <= self.last_step[run_id][curve]:
                continue
            metrics = [Metric(name, float(v), 0, step) for name, v in values.items() if v is not None]
            self.client.log_batch(run_id, metrics=metrics)
            if curve is not None:
                self.last_step[run_id][curve] = step

    def finish_trial(self, record: TrialRecord, store: GridStore) -> None:
        """Final metrics, the device and member k's files (weights, PNG, arrays) on each member's run."""
        from mlflow.entities import Metric

        key = record.trial.key
        for k, run_id in enumerate(self.runs[key]):
            if self.client.get_run(run_id).info.status == "FINISHED":
                continue  # another sweep process of this store finished this trial and recorded it
            member = record.members[k]
            metrics = self._missing_curve_points(run_id, member)
            metrics += [Metric(f"final_{n}", float(v), 0, record.iterations) for n, v in member.metrics.items()]
            metrics += [Metric("test_error_by_warps", float(v), 0, int(n)) for n, v in member.test_warps.items()]
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(run_id, metrics=metrics[i : i + BATCH])
            self.client.set_tag(run_id, "device", record.device)
            if store.member_folder(key, k).is_dir():
                self.client.log_artifacts(run_id, str(store.member_folder(key, k)))
            self.client.set_terminated(run_id, "FINISHED")

    def _missing_curve_points(self, run_id: str, member) -> list:
        """The points of the member's curves (its record's, which a continued trial's carries from the shorter
        trial on) that its run lacks: so that a run's history is the whole curve the results table has."""
        from mlflow.entities import Metric

        points = [("train_loss", step, value) for step, value in member.curve]
        points += [(name, step, value) for step, row in member.test_curve for name, value in row.items() if value is not None]
        have = {name: {m.step for m in self.client.get_metric_history(run_id, name)} for name in {p[0] for p in points}}
        return [Metric(name, float(value), 0, step) for name, step, value in points if step not in have[name]]

    def fail_trial(self, trial_key: str) -> None:
        for run_id in self.runs.get(trial_key, []):
            self.client.set_terminated(run_id, "FAILED")

    def abort(self, status: str) -> None:
        """A sweep that failed (FAILED) or was interrupted (KILLED): no run of it stays RUNNING."""
        for run_id in [r for ids in self.runs.values() for r in ids] + [self.parent]:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)

    def finish_sweep(self, summary: dict) -> None:
        """Summary as tags (a rerun may overwrite them; params are write-once); then where its runs are."""
        self.client.log_batch(self.parent, tags=[_tag(f"sweep.{k}", v) for k, v in _flatten("", summary, {}).items()])
        self.client.set_terminated(self.parent, "FINISHED")
        print(f"{self.name}: MLflow runs at {where(self.uri, self.experiment_id)}", file=sys.stderr)


def _params(flat: dict):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in flat.items()]


def _tag(key: str, value) -> object:
    from mlflow.entities import RunTag

    return RunTag(key, str(value))


def print_urls(uri: str | None = None, names: list[str] | None = None) -> int:
    """Print, per experiment of the store, the URL of its runs table in ``mlflow ui``."""
    uri = tracking_uri(uri)
    client = open_store(uri)
    server = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    found = [e for e in client.search_experiments() if names is None or e.name in names]
    if server == "http://127.0.0.1:5000":
        print(f"MLflow runs: start `mlflow ui --backend-store-uri {uri}`, then open")
    for exp in sorted(found, key=lambda e: e.name):
        print(f"  {exp.name:<16} {runs_url(exp.experiment_id, server)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Where each experiment's runs are in the MLflow UI.")
    parser.add_argument("--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiments", nargs="*", help="only these (default: every experiment of the store)")
    args = parser.parse_args(argv)
    try:
        return print_urls(args.uri, args.experiments)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
