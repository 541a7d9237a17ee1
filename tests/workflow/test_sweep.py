"""pipeline.sweep / grids / tracking / results with a real local Ray and a real MLflow store."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest

from pipeline import grids, sweep
from tests.conftest import REPO, fetched_from
from tests.pipeline.test_grids import write_grid

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.tracking.MlflowClient(uri)


@pytest.fixture(scope="module")
def ray_runtime():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def child_runs(client, grid_name):
    exp = client.get_experiment_by_name(grid_name)
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if "icstn.run_key" in r.data.tags]


def test_ray_sweep_records_every_model(tmp_path, store, data_root, mirror, ray_runtime, capfd):
    grid = write_grid(tmp_path, "two_by_two")
    path = sweep.sweep(grid, tmp_path / "results", data_root / "processed", {"profile": "test"}, executor="ray")
    err = capfd.readouterr().err
    # the sweep's own progress lines, not Tune's tables of every config
    assert "two_by_two [0/2] started IC-STN-2(b) σ=3.5 seeds 0,1" in err or "two_by_two [1/2] started IC-STN-2(b)" in err
    assert re.search(r"two_by_two \[2/2\] finished \S+ σ=3.5 seeds 0,1 in \d+ s: test error [0-9.]+% \(mean of 2\)", err)
    assert "started with configuration" not in err and "Trial status" not in err
    assert "Configuration for experiment" not in err and "View detailed results" not in err
    runs = child_runs(store, "two_by_two")
    curves = {}
    assert sorted(r.info.run_name for r in runs) == sorted(f"{m} seed={s} sigma=3.5" for m in ["IC-STN-2(b)", "CNN(b)"] for s in (0, 1))
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["train.iterations"] == "20" and run.data.params["seed"] in ("0", "1")
        assert {"git_commit", "device", "profile"} <= set(run.data.tags)
        history = store.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, 21))  # the whole curve, once
        # the learning curve: log-spaced (1, 2, 5, 10, 20), every 10th step (eval_every) and the last, once each
        tested = sorted(store.get_metric_history(run.info.run_id, "test_error"), key=lambda m: m.step)
        assert [m.step for m in tested] == [1, 2, 5, 10, 20]
        curves[run.data.tags["icstn.run_key"]] = [m.value for m in tested]
        assert {a.path for a in store.list_artifacts(run.info.run_id)} == {"model.pt", "alignment.png", "arrays.npz"}
    artifacts = tmp_path / "mlruns" / "two_by_two"  # beside the store, wherever the sweep ran from
    assert store.get_experiment_by_name("two_by_two").artifact_location == artifacts.as_uri()
    assert len(list(artifacts.glob("*/artifacts/model.pt"))) == 4
    df = pd.read_parquet(path)
    # per model x seed: test_error and test_loss, plus test_error at 3 warps for the IC-STN
    assert len(df) == 2 * 2 * 2 + 2
    assert set(df["metric"]) == {"test_error", "test_loss"}
    ic = df[(df.model == "IC-STN-2(b)") & (df.metric == "test_error")]
    assert sorted(ic["n_warps_test"]) == [2, 2, 3, 3]
    assert (df["profile"] == "test").all() and df["git_commit"].notna().all() and (df["iterations"] == 20).all()
    assert df["data_fetched_from"].str.contains(fetched_from(mirror), regex=False).all()
    # the results table keeps each final value's curve beside it, at the steps MLflow has
    final = df[(df.metric == "test_error") & (df.n_warps_test == df.n_warps_train)]
    for row in final.itertuples():
        assert list(row.curve_step) == [1, 2, 5, 10, 20] and row.curve_value[-1] == row.value
        assert list(row.curve_value) == pytest.approx(curves[f"{row.trial_key}/seed={row.seed}/sigma=3.5"])
    assert all(len(c) == 0 for c in df[df.n_warps_test != df.n_warps_train].curve_step)  # 3 warps: a final value only
    assert not df["data_fetched_from"].str.contains(str(mirror), regex=False).any()  # no machine's path travels with results

    # rerunning a finished sweep trains nothing and duplicates nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "two_by_two" / "trials").glob("*/record.json")}
    sweep.sweep(grid, tmp_path / "results", data_root / "processed", {"profile": "test"}, executor="ray")
    assert len(child_runs(store, "two_by_two")) == 4
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_inline_executor_matches_ray(tmp_path, data_root, store, capfd):
    grid = write_grid(tmp_path, "inline_grid", models=["IC-STN-2(b)"])
    path = sweep.sweep(grid, tmp_path / "res", data_root / "processed", {}, executor="inline", track=False)
    err = capfd.readouterr().err
    assert "inline_grid: 1 trial, 0 already done, 1 to run (2 models of 20 iterations on cpu)" in err
    assert re.search(r"inline_grid \[1/1\] finished IC-STN-2\(b\) σ=3.5 seeds 0,1 in \d+ s: test error", err)
    df = pd.read_parquet(path)
    assert len(df) == 2 * 3 and store.get_experiment_by_name("inline_grid") is None  # --no-tracking


def test_a_swept_setting_tells_runs_and_progress_lines_apart(tmp_path, data_root, store, capfd):
    grid = write_grid(tmp_path, "noise_family", models=["STN(b)"], seeds=[0], noise_warp=["affine", "homography"])
    sweep.sweep(grid, tmp_path / "res", data_root / "processed", {}, executor="inline")
    err = capfd.readouterr().err
    for warp in ("affine", "homography"):
        assert re.search(rf"noise_family \[\d/2\] finished STN\(b\) noise_warp={warp} σ=3.5 seeds 0 in \d+ s", err)
    names = sorted(r.info.run_name for r in child_runs(store, "noise_family"))
    assert names == ["STN(b) noise_warp=affine seed=0 sigma=3.5", "STN(b) noise_warp=homography seed=0 sigma=3.5"]


def test_cli_fails_before_compute(tmp_path):
    grid = write_grid(tmp_path, "bad", sigma_px=[-2])
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", "--grid", str(grid), "--out", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "sigma_px.0" in out.stderr
    assert not (tmp_path / "r").exists()


def test_optuna_search_records_best(tmp_path, store, data_root, ray_runtime):
    space = {"lr_classifier": {"low": 0.01, "high": 0.5}, "lr_geometric": {"low": 1e-4, "high": 1e-2}}
    grid = write_grid(
        tmp_path, "searched", models=["IC-STN-2(b)"], seeds=[0], search={"num_samples": 3, "validation_size": 200, "space": space}
    )
    path = sweep.sweep(grid, tmp_path / "results", data_root / "processed", {}, executor="ray")
    best = json.loads((tmp_path / "results" / "searched" / "best.json").read_text())
    assert best["split"] == "validation" and 0.01 <= best["lr_classifier"] <= 0.5
    runs = child_runs(store, "searched")
    validation = [r for r in runs if r.data.tags.get("split") == "validation"]
    assert len(validation) == 3
    assert min(r.data.metrics["final_test_error"] for r in validation) == pytest.approx(best["objective"])
    df = pd.read_parquet(path)  # the best setting, retrained and tested on the test set
    assert set(df["split"]) == {"test"} and df["lr_classifier"].iloc[0] == pytest.approx(best["lr_classifier"])
    parent = [r for r in store.search_runs([store.get_experiment_by_name("searched").experiment_id]) if "icstn.run_key" not in r.data.tags]
    assert "sweep.best.lr_classifier" in parent[0].data.tags


def test_interrupted_sweep_resumes(tmp_path, store, data_root):
    """Kill a real sweep process after its first trial, rerun: nothing finished is retrained."""
    grid = write_grid(tmp_path, "resumable", iterations=400, eval_every=100, batch_size=50)
    cmd = [sys.executable, "-m", "pipeline.sweep", "--grid", str(grid), "--out", str(tmp_path / "res"),
           "--data", str(data_root / "processed"), "--executor", "inline"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    trials = tmp_path / "res" / "resumable" / "trials"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        records = list(trials.glob("*/record.json"))
        checkpoints = list(trials.glob("*/checkpoint.pt"))
        if records and checkpoints:  # first trial done, second one part-way
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(records) == 1, "the sweep should have been killed mid-way through its second trial"
    done_before = records[0].stat().st_mtime_ns
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    assert records[0].stat().st_mtime_ns == done_before  # not retrained
    resumed = [json.loads(p.read_text()) for p in trials.glob("*/record.json") if p != records[0]]
    assert len(resumed) == 1 and resumed[0]["resumed_from_step"] >= 100
    runs = child_runs(store, "resumable")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in store.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 400


def test_a_rerun_trial_logs_each_point_of_its_curves_once(tmp_path, store):
    """A trial interrupted before its first checkpoint is rerun from scratch, repeating curve points
    its MLflow runs already have: each step of the training-loss and test curves is logged once."""
    from pipeline import tracking
    from pipeline.store import GridStore

    grid = grids.load_grid(write_grid(tmp_path, "rerun", models=["CNN(b)"], seeds=[0]))
    trial = grids.expand(grid)[0]

    def run(steps, shift):  # a rerun's values may differ in the last bits (a GPU's are not bit for bit)
        tracker = tracking.Tracker(grid, GridStore(tmp_path / "results", "rerun"), "one-sweep", {})
        tracker.start_trial(trial)
        for step in steps:
            tracker.log(trial.key, step, [{"train_loss": 1.0 / step + shift}])
            tracker.log(trial.key, step, [{"test_error": 90.0 - step + shift, "test_loss": 2.0 + shift}])

    run([1, 2, 5], 0.0)  # killed after step 5
    run([1, 2, 5, 10, 20], 1e-6)  # the rerun
    (only,) = child_runs(store, "rerun")
    for metric in ("train_loss", "test_error", "test_loss"):
        assert [m.step for m in store.get_metric_history(only.info.run_id, metric)] == [1, 2, 5, 10, 20], metric


def test_a_search_per_model_tunes_each_model(tmp_path, data_root):
    space = {"lr_classifier": {"low": 0.01, "high": 0.5}}
    search = {"num_samples": 2, "validation_size": 200, "space": space, "per_model": True}
    grid = write_grid(tmp_path, "each", models=["CNN(b)", "STN(b)"], seeds=[0], iterations=10, search=search)
    sweep.sweep(grid, tmp_path / "results", data_root / "processed", {}, executor="inline", track=False)
    best = json.loads((tmp_path / "results" / "each" / "best.json").read_text())
    assert best["tuned"] == "per model" and set(best["per_model"]) == {"CNN(b)", "STN(b)"}
    df = pd.read_parquet(tmp_path / "results" / "each.parquet")
    used = df.groupby("model").lr_classifier.first().to_dict()
    assert used == pytest.approx({m: b["lr_classifier"] for m, b in best["per_model"].items()})  # each model its own
