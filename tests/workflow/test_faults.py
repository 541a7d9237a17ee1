"""Faults made to happen for real: a killed trial worker, bad addresses, damaged files.

Each bad input must fail before any compute, naming what is wrong, and leave nothing behind.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
import torch
import yaml

from pipeline import sweep
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

GRID = {
    "experiment": "mnist",
    "models": ["IC-STN-2(b)"],
    "seeds": [0, 1],
    "iterations": 300,
    "batch_size": 50,
    "lr_geometric": 0.001,
    "lr_classifier": 0.1,
    "eval_every": 50,
    "test_samples": 100,
}


def write_grid(folder, name="faulty", **changes):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return path


def run_cli(args, env=None, **kw):
    """The sweep's command line, on the paper profile named (a bare command adds a line saying it runs that budget)."""
    cmd = [sys.executable, "-m", "pipeline.sweep", "--profile", "paper", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def test_unreachable_tracking_server_fails_fast(tmp_path, data_root):
    out = run_cli(
        ["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed"],
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        timeout=60,
    )
    assert out.returncode == 2
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in out.stderr
    assert not (tmp_path / "r").exists()


def test_ray_address_pointing_at_nothing(tmp_path, data_root):
    settings = json.dumps({"ray": {"address": "127.0.0.1:9"}})
    start = time.monotonic()
    out = run_cli(
        [
            "--grid",
            write_grid(tmp_path),
            "--out",
            tmp_path / "r",
            "--data",
            data_root / "processed",
            "--settings",
            settings,
            "--no-tracking",
        ],
        timeout=120,
    )
    print(f"failed after {time.monotonic() - start:.1f} s")  # reported, not asserted
    assert out.returncode == 2
    assert "no Ray cluster answers at ray.address='127.0.0.1:9'" in out.stderr
    assert not list((tmp_path / "r").glob("*/trials/*/record.json"))


@pytest.mark.parametrize(
    "settings, executor, message",
    [
        ({"device": "gpu"}, "ray", "--settings: key 'device': bad value 'gpu'; allowed: auto (cuda where torch sees a GPU, else cpu)"),
        ({"device": "cuda", "ray": {"gpus_per_trial": 0}}, "ray", "config key 'ray.gpus_per_trial' is 0 but 'device' is cuda"),
        ({"device": "cuda:0", "ray": {"gpus_per_trial": 1}}, "inline", "this machine has no CUDA device"),
    ],
)
def test_unusable_device_fails_before_compute(tmp_path, data_root, settings, executor, message):
    if executor == "inline" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    args = ["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed"]
    out = run_cli([*args, "--settings", json.dumps(settings), "--executor", executor, "--no-tracking"], timeout=60)
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "r").exists()


def test_missing_prepared_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepared dataset 'mnist' not found.*pipeline.prepare mnist"):
        sweep.sweep(write_grid(tmp_path), tmp_path / "r", tmp_path / "no-data", {}, "inline", track=False)
    assert not (tmp_path / "r").exists()


def test_damaged_prepared_data_is_named_before_any_compute(tmp_path, data_root):
    source, copy = data_root / "processed" / "mnist", tmp_path / "processed" / "mnist"
    copy.mkdir(parents=True)
    for path in source.iterdir():
        (copy / path.name).symlink_to(path)
    (copy / "test_labels.npy").unlink()
    (copy / "test_labels.npy").write_bytes((source / "test_labels.npy").read_bytes()[:300])  # cut short
    with pytest.raises(ValueError, match=f"prepared dataset 'mnist' is damaged: {copy / 'test_labels.npy'} .*; delete {copy} and run"):
        sweep.sweep(write_grid(tmp_path), tmp_path / "r", tmp_path / "processed", {}, "inline", track=False)
    (copy / "test_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=f"prepared dataset 'mnist' is incomplete: {copy / 'test_labels.npy'} is missing"):
        sweep.sweep(write_grid(tmp_path), tmp_path / "r", tmp_path / "processed", {}, "inline", track=False)
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint_on_resume(tmp_path, data_root):
    from pipeline import grids

    grid = write_grid(tmp_path)
    key = grids.expand(grids.load_grid(grid))[0].key
    bad = tmp_path / "r" / "faulty" / "trials" / key / "checkpoint.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {bad} is unreadable.*delete it"):
        sweep.sweep(grid, tmp_path / "r", data_root / "processed", {}, "inline", track=False)
    assert not (bad.parent / "record.json").exists()
    assert bad.read_bytes().startswith(b"PK")  # the user's file is left for them to inspect


@pytest.mark.parametrize(
    "model, changes, step, differing",
    [
        # a run of a longer schedule at another rate, 600 steps in, put in the folder of a 300-iteration trial
        (
            "IC-STN-2(b)",
            {"lr_geometric": 3e-5, "iterations": 3000},
            600,
            ["lr_geometric 3e-05 (wanted 0.001)", "step 600 (wanted 'at most iterations=300')"],
        ),
        ("STN(b)", {}, 0, ["model.name 'STN(b)' (wanted 'IC-STN-2(b)')"]),
    ],
)
def test_a_checkpoint_of_other_settings_is_refused_before_compute(tmp_path, data_root, model, changes, step, differing):
    """Resumed, the first was recorded as the trial's own (its row said 0.001 and 600 iterations); the
    second failed only in the trial, three times under Ray, in pages naming neither the file nor what to do."""
    from icstn import data, models
    from icstn.train import TrainConfig, Trainer
    from pipeline import grids

    grid = write_grid(tmp_path)
    trial = grids.expand(grids.load_grid(grid))[0]
    mnist = data.load(data_root / "processed", "mnist")
    other = Trainer(models.get_config("mnist", model), TrainConfig(**{**trial.train, **changes}), mnist, trial.seeds, trial.sigma_px)
    other.step = step
    path = other.save(tmp_path / "r" / "faulty" / "trials" / trial.key / "checkpoint.pt")
    out = run_cli(["--grid", grid, "--out", tmp_path / "r", "--data", data_root / "processed", "--no-tracking"], timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: checkpoint {path} was trained with other settings: ")
    assert error.endswith("; delete it to retrain that trial afresh")
    assert all(d in error for d in differing), error
    assert len(out.stderr.strip().splitlines()) == 1 and "Ray" not in out.stderr  # before the Ray runtime starts
    assert path.is_file() and not (path.parent / "record.json").exists()


def test_a_damaged_record_is_named_before_any_compute(tmp_path, data_root):
    from pipeline import grids

    grid = write_grid(tmp_path, models=["CNN(b)", "STN(b)"])
    first, second = (t.key for t in grids.expand(grids.load_grid(grid)))
    bad = tmp_path / "r" / "faulty" / "trials" / first / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"trial": {"grid": "faulty", ')  # a record cut short by a disk, not by us: ours are written atomically
    with pytest.raises(ValueError, match=f"{bad} is damaged \\(JSONDecodeError: .*\\); delete it to train that trial again"):
        sweep.sweep(grid, tmp_path / "r", data_root / "processed", {}, "inline", track=False)
    assert not (tmp_path / "r" / "faulty" / "trials" / second).exists()  # the other trial did not start


FULL_DEVICE = Path("/dev/full")  # Linux: every write to it fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not FULL_DEVICE.exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_a_full_disk_is_one_line_naming_the_file_and_no_retry(tmp_path, data_root, executor):
    """A full disk gave 370 lines of tracebacks, three Ray retries that could not succeed and torch's
    'enforce fail at inline_container.cc'. The second trial's checkpoint is written to /dev/full
    (the temporary file it is written to, then renamed, is a link there): the real write path fails."""
    from pipeline import grids

    grid = write_grid(tmp_path, "full", models=["CNN(b)", "STN(b)"], iterations=10, eval_every=0)
    first, second = grids.expand(grids.load_grid(grid))
    link = tmp_path / "r" / "full" / "trials" / second.key / "checkpoint.pt.tmp"
    link.parent.mkdir(parents=True)
    link.symlink_to(FULL_DEVICE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--grid", grid, "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", executor,
            "--settings", json.dumps({"ray": {"num_cpus": 2}})]  # fmt: skip
    out = run_cli(args, env={"MLFLOW_TRACKING_URI": uri}, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert lines[-1] == (
        f"error: no space left on device: {link.parent / 'checkpoint.pt'} could not be written; free space there and run the same "
        "command again (finished trials are kept; unfinished ones resume from their last checkpoints)"
    ), out.stderr[-3000:]
    assert len(lines) < 40, out.stderr
    for noise in ("Traceback", "enforce fail", "Trial task failed"):
        assert noise not in out.stderr, out.stderr
    assert sum(f"started {second.label}" in line for line in lines) == 1  # never retried
    assert not link.exists()  # nothing half-written is left
    if executor == "inline":  # one trial after another: the first finished, and is kept
        assert (tmp_path / "r" / "full" / "trials" / first.key / "record.json").is_file()
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    # space freed (the link is gone): the same command finishes the sweep, from what was kept
    rerun = run_cli(args, env={"MLFLOW_TRACKING_URI": uri}, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    if executor == "inline":
        assert "full: 2 trials, 1 already done, 1 to run" in rerun.stderr
    assert len(pd.read_parquet(tmp_path / "r" / "full.parquet")) == 2 * 2 * 2  # 2 models x 2 seeds x (error, loss)
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 1 + 4


def test_an_error_no_retry_mends_is_not_retried_by_ray(tmp_path, data_root, capfd):
    """A trial's checkpoint that it cannot resume is refused before compute, but a search's trials
    are known only once sampled: under Ray their refusal stops the sweep at once, as a full disk does."""
    from pipeline import grids, settings
    from pipeline.executors import tune as tune_executor
    from pipeline.runner import Context, Unrecoverable

    trial = grids.expand(grids.load_grid(write_grid(tmp_path, "stop", models=["CNN(b)"], seeds=[0], iterations=10)))[0]
    bad = tmp_path / "r" / "stop" / "trials" / trial.key / "checkpoint.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    ctx = Context(str(data_root / "processed"), str(tmp_path / "r"), "cpu", cuda_graph=True)
    with pytest.raises(Unrecoverable, match=f"checkpoint {bad} is unreadable .*; delete it"):
        tune_executor.run([trial], ctx, settings.resolve({"device": "cpu", "ray": {"num_cpus": 1}}))
    err = capfd.readouterr().err
    assert err.count(f"started {trial.label}") == 1 and "Trial task failed" not in err, err[-3000:]


def test_too_little_space_is_refused_before_any_compute(tmp_path, data_root, monkeypatch):
    import shutil

    from pipeline import files

    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(files, "MIN_FREE", free + 2**40)  # a disk with less free space than a sweep needs
    with pytest.raises(files.DiskFull) as caught:
        sweep.sweep(write_grid(tmp_path), tmp_path / "r", data_root / "processed", {}, "inline", track=False)
    assert str(caught.value).startswith(f"no space left on device: {tmp_path / 'r'} (the results) is on a filesystem with ")
    assert "MB free, less than the " in str(caught.value)
    assert not (tmp_path / "r").exists()


def test_a_full_sqlite_store_is_told_from_other_errors(tmp_path):
    """sqlite's own 'database or disk is full', however MLflow and SQLAlchemy wrap it, is a full disk."""
    import sqlite3

    from pipeline import files

    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA max_page_count = 2")  # the store can grow no further, as on a full disk
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    try:
        raise RuntimeError("wrapped") from caught.value
    except RuntimeError as wrapped:
        assert files.out_of_space(wrapped) is caught.value
    assert files.out_of_space(ValueError("database is locked")) is None


def _trial_workers():
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if "_tune_trainable" in text or "ImplicitFunc" in text:
            found.append(proc)
    return found


@pytest.mark.slow
def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, data_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_grid(tmp_path, "killed", models=["IC-STN-2(b)", "STN(b)"])
    cmd = [sys.executable, "-m", "pipeline.sweep", "--grid", str(grid), "--out", str(tmp_path / "r"),
           "--data", str(data_root / "processed"), "--settings", json.dumps({"ray": {"num_cpus": 2}})]  # fmt: skip
    # the workers' own temporary folder, to see what a resume leaves there (Ray's session stays in the usual place)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TMPDIR": str(scratch), "RAY_TMPDIR": tempfile.gettempdir()}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    trials = tmp_path / "r" / "killed" / "trials"
    killed = []
    deadline = time.monotonic() + 240
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        workers = _trial_workers()
        # both running trials have checkpointed: SIGKILL their workers, mid-training
        if len(workers) == 2 and len(list(trials.glob("*/checkpoint.pt"))) == 2:
            for w in workers:
                w.kill()
            killed = workers
        time.sleep(0.1)
    output = proc.communicate(timeout=300)[0].decode()
    assert killed, "no trial workers were found to kill"
    assert proc.returncode == 0, output[-3000:]
    records = [json.loads(p.read_text()) for p in trials.glob("*/record.json")]
    assert len(records) == 2
    assert all((r["resumed_from_step"] or 0) >= 50 for r in records), "retried trials resume from their checkpoints"
    assert not list(scratch.glob("checkpoint_tmp_*")), "a resume left its copy of Tune's checkpoint behind"
    assert "Token authentication" not in output and "Wrote the latest version" not in output  # Ray's lines at every sweep
    client = mlflow.tracking.MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("killed").experiment_id]) if "icstn.run_key" in r.data.tags]
    assert sorted(r.data.tags["icstn.run_key"] for r in runs) == sorted({r.data.tags["icstn.run_key"] for r in runs})
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    df = pd.read_parquet(tmp_path / "r" / "killed.parquet")
    assert len(df) == 2 * 2 * 2 and (df.groupby(["model", "seed"]).size() == 2).all()  # test error and loss each
    print(f"killed {[w.pid for w in killed]}; resumed from {[r['resumed_from_step'] for r in records]}; runs 4 expected, {len(runs)} found")
