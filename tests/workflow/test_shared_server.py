"""A research group's set-up: several checkouts, each with its own results folder, recording into
one ``mlflow server``. Their runs must never merge, and each rerun must find its own."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

TINY = {  # the smallest planar grid: a few seconds of a sweep's time go to training
    "experiment": "planar",
    "models": ["c-STN-1"],
    "noise_warp": "affine",
    "sigma_px": [5.0],
    "seeds": [0],
    "iterations": 5,
    "eval_every": 0,
    "lr_geometric": 0.001,
    "lr_classifier": 0.0,
    "test_samples": 100,
}


@pytest.fixture
def server(tmp_path):
    """A real ``mlflow server`` on a free loopback port, with an sqlite store; its URI."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (the server's whole life)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--backend-store-uri",
           f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: a session of their own
        proc.wait(timeout=60)
        log.close()


def checkout(folder: Path, commits: int) -> tuple[Path, str]:
    """A clone of the project's code, at a commit of its own, with the tiny grid; its folder and commit."""
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("pipeline", "icstn", "config"):
        shutil.copytree(REPO / name, folder / name, ignore=ignore)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=folder, check=True)
    subprocess.run([*git, "add", "."], cwd=folder, check=True)
    for k in range(commits):  # different histories: different commits
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", f"{folder.name} {k}"], cwd=folder, check=True)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True, text=True, check=True)
    return folder, head.stdout.strip()


def sweep_in(folder: Path, data_root: Path, uri: str) -> str:
    """``python -m pipeline.sweep`` of the tiny grid in a checkout, with its own code; its stderr."""
    args = ["--grid", "tiny.yaml", "--out", "results", "--data", data_root / "processed", "--executor", "inline"]
    env = {**os.environ, "PYTHONPATH": str(folder), "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([sys.executable, "-m", "pipeline.sweep", *map(str, args)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def runs(uri: str) -> tuple[list, list]:
    """The tiny experiment's parent runs and child runs on the server."""
    client = mlflow.tracking.MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    return [r for r in found if "icstn.run_key" not in r.data.tags], [r for r in found if "icstn.run_key" in r.data.tags]


def record_of(folder: Path) -> dict:
    (path,) = (folder / "results" / "tiny" / "trials").glob("*/record.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_checkouts_on_one_server_keep_their_own_runs(tmp_path, data_root, server):
    (a, commit_a), (b, commit_b) = checkout(tmp_path / "a", 1), checkout(tmp_path / "b", 2)
    assert commit_a != commit_b
    sweep_in(a, data_root, server)
    (parent_a,), _ = runs(server)
    assert parent_a.info.status == "FINISHED"

    err = sweep_in(b, data_root, server)  # the same grid, name and content, from the other checkout
    assert "1 to run" in err  # B's store has no record yet: B trains
    parents, children = runs(server)
    assert len(parents) == 2 and len(children) == 2, [r.info.run_name for r in parents + children]
    assert len({r.info.run_name for r in parents}) == 2  # told apart by name in the runs table
    (still_a,) = [r for r in parents if r.info.run_id == parent_a.info.run_id]
    assert still_a.info.end_time == parent_a.info.end_time  # B's sweep did not reopen A's
    assert still_a.data.tags["sweep.seconds"] == parent_a.data.tags["sweep.seconds"]
    assert still_a.data.tags["git_commit"] == commit_a
    for folder, commit in ((a, commit_a), (b, commit_b)):
        record = record_of(folder)
        assert record["provenance"]["git_commit"] == commit  # each checkout's code ran
        (child,) = [r for r in children if r.data.tags["git_commit"] == commit]
        (parent,) = [r for r in parents if r.info.run_id == child.data.tags["mlflow.parentRunId"]]
        assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
        assert parent.data.tags["git_commit"] == commit
        assert child.data.tags["icstn.store"] == parent.data.tags["icstn.store"]
        assert child.data.metrics["final_test_error"] == pytest.approx(record["members"][0]["metrics"]["test_error"])
        assert child.data.tags["device"] == record["device"]

    err = sweep_in(a, data_root, server)  # a rerun of A: nothing to train, its own runs found
    assert "1 already done, 0 to run" in err
    parents_after, children_after = runs(server)
    assert {r.info.run_id for r in parents_after} == {r.info.run_id for r in parents}  # no duplicate
    assert {r.info.run_id for r in children_after} == {r.info.run_id for r in children}
    (b_parent,) = [r for r in parents if r.info.run_id != parent_a.info.run_id]
    (b_after,) = [r for r in parents_after if r.info.run_id == b_parent.info.run_id]
    assert (b_after.info.end_time, b_after.data.tags) == (b_parent.info.end_time, b_parent.data.tags)  # B's untouched
    assert {r.info.status for r in parents_after + children_after} == {"FINISHED"}


@pytest.mark.slow
def test_a_trial_retrained_after_its_record_was_deleted_gets_a_run_of_its_own(tmp_path, data_root, monkeypatch):
    from pipeline import sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump(TINY))
    sweep.sweep(grid, tmp_path / "results", data_root / "processed", {"profile": "test"}, executor="inline")
    (path,) = (tmp_path / "results" / "tiny" / "trials").glob("*/record.json")
    path.unlink()  # what the message about a damaged record tells the user to do
    sweep.sweep(grid, tmp_path / "results", data_root / "processed", {"profile": "test"}, executor="inline")
    _, children = runs(uri)
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    newest = max(children, key=lambda r: r.info.start_time)
    assert newest.data.metrics["final_test_error"] == pytest.approx(json.loads(path.read_text())["members"][0]["metrics"]["test_error"])


def test_a_damaged_store_id_is_refused_naming_the_file(tmp_path, data_root, monkeypatch):
    from pipeline import sweep

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump(TINY))
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "store.json").write_text('{"id": "x\' or 1=1"}')
    with pytest.raises(ValueError, match=r"results/tiny/store.json is damaged \(its 'id' must be 32 hex digits\); delete it"):
        sweep.sweep(grid, tmp_path / "results", data_root / "processed", {"profile": "test"}, executor="inline")
    assert not list((tmp_path / "results" / "tiny").glob("trials/*"))  # refused before any compute
