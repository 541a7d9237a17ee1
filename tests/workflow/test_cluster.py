"""A real two-node Ray cluster on loopback (`ray start`), a sweep across it, and a node killed mid-sweep."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

RAY = str(Path(sys.executable).parent / "ray")
MODELS = ["CNN(b)", "STN(b)", "c-STN-1(b)", "IC-STN-2(b)", "IC-STN-4(b)", "IC-STN-6(b)"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    """Head and worker node, each with 1 CPU and its own resource label; stopped afterwards."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # `ray start` clusters require the token (~/.ray/auth_token)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a multi-node cluster, not local-only
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", '--resources={"head_node": 1}', *common],
                   env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", '--resources={"worker_node": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def worker_node_processes():
    raylets = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "worker_node" in " ".join(p.info["cmdline"] or []) and "raylet" in " ".join(p.info["cmdline"] or [])
    ]
    return raylets + [c for r in raylets for c in r.children(recursive=True)]


@pytest.mark.slow
def test_sweep_spans_both_nodes_and_survives_losing_one(tmp_path, data_root, cluster):
    address, env = cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = tmp_path / "cluster.yaml"
    grid.write_text(yaml.safe_dump({"experiment": "mnist", "models": MODELS, "seeds": [0], "iterations": 150, "batch_size": 50,
                                    "lr_geometric": 0.001, "lr_classifier": 0.1, "eval_every": 30, "test_samples": 100}))  # fmt: skip
    settings = json.dumps({"ray": {"address": address, "max_failures": 3}})
    cmd = [sys.executable, "-m", "pipeline.sweep", "--grid", str(grid), "--out", str(tmp_path / "r"),
           "--data", str(data_root / "processed"), "--settings", settings]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    trials = tmp_path / "r" / "cluster" / "trials"
    nodes_before_kill, killed = set(), []
    deadline = time.monotonic() + 300
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        nodes_before_kill = {json.loads(p.read_text())["where"]["ray_node"] for p in trials.glob("*/record.json")}
        if len(nodes_before_kill) == 2:  # trials finished on both nodes: now lose the worker node mid-sweep
            killed = worker_node_processes()
            for p in killed:
                p.kill()
        time.sleep(0.2)
    try:
        output = proc.communicate(timeout=600)[0].decode()
    except subprocess.TimeoutExpired:  # a sweep that never ends after the node loss: show what it said
        proc.kill()
        pytest.fail("the sweep did not end within 600 s of losing the worker node; it said:\n" + proc.communicate()[0].decode()[-4000:])
    assert len(nodes_before_kill) == 2, "trials should have run on both nodes"
    assert killed, "the worker node's raylet was not found"
    assert proc.returncode == 0, output[-3000:]
    records = [json.loads(p.read_text()) for p in trials.glob("*/record.json")]
    assert sorted(r["model"] for r in records) == sorted(MODELS)
    client = mlflow.tracking.MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("cluster").experiment_id]) if "icstn.run_key" in r.data.tags]
    assert len(runs) == len(MODELS) and all(r.info.status == "FINISHED" for r in runs)
    print(f"nodes used before the kill: {len(nodes_before_kill)}; killed {len(killed)} processes; "
          f"records {len(records)}/{len(MODELS)}; runs {len(runs)}/{len(MODELS)}")  # fmt: skip
