"""Stop anywhere, continue exactly: a sweep's limit (a time, a step, a SIGTERM) and a longer budget
that continues a shorter one, with real data, a real MLflow store and a real Ray runtime.

A run interrupted any number of times, or trained on from a shorter budget, gives the results
table of one uninterrupted run, bit for bit on a CPU (timing columns aside)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from pipeline import sweep
from pipeline.stop import Limit, parse_duration
from pipeline.store import GridStore
from tests.conftest import REPO
from tests.pipeline.test_grids import TINY
from tests.workflow.test_attack import ALIGN, mini_workflow, runs_of, snakemake, sweep_cli
from tests.workflow.test_attack import write_grid as write_align_grid

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

GRID = TINY  # the sweep tests' tiny MNIST grid: two models, two seeds, 20 iterations
PROVENANCE = ["seconds", "device"]  # how long and on how many threads (a Ray trial's one, the inline executor's all)


def write_grid(folder, name="stops", **changes):
    """The grid ``name`` (part of every trial's key), in a folder of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return path


def table(path, drop=PROVENANCE) -> pd.DataFrame:
    """A results table without the columns ``drop`` (how long and where), in a fixed row order."""
    df = pd.read_parquet(path).drop(columns=drop)
    return df.sort_values(["model", "seed", "metric", "n_warps_test"]).reset_index(drop=True)


def checkpoint_steps(results) -> dict[str, int]:
    """Trial key -> the step of its checkpoint, for the trials that have one."""
    found = (results / "stops" / "trials").glob("*/checkpoint.pt")
    return {p.parent.name: torch.load(p, weights_only=True)["step"] for p in found}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    """The grid trained in one go: the table every other way of training it must give."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return sweep.sweep(write_grid(tmp), tmp / "res", data_root / "processed", {}, executor="inline", track=False)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def statuses(uri) -> dict[str, str]:
    return {r.info.run_name: r.info.status for r in runs_of(uri, "stops")}


def test_a_sweep_stopped_twice_gives_the_uninterrupted_table(tmp_path, data_root, store, uninterrupted, capfd):
    grid, results = write_grid(tmp_path), tmp_path / "res"
    run = lambda limit: sweep.sweep(grid, results, data_root / "processed", {}, executor="inline", limit=limit)  # noqa: E731
    with pytest.raises(sweep.SweepStopped, match=r"stops: stopped at step 7; rerun to continue \(2 of 2 trials unfinished"):
        run(Limit(step=7))
    assert "stops [0/2] stopped IC-STN-2(b) σ=3.5 seeds 0,1 at 7/20 (checkpoint written)" in capfd.readouterr().err
    first = checkpoint_steps(results)
    assert list(first.values()) == [7]  # the first trial stopped at the limit; the second never started
    assert not (results / "stops.parquet").exists()  # no row of an unfinished trial
    summary = json.loads((results / "stops" / "sweep.json").read_text())
    assert summary["finished"] is False and summary["stopped"] == "step 7" and len(summary["keys"]) == 2
    assert set(statuses(store).values()) == {"KILLED"}  # the stopped trial's runs and the sweep's

    with pytest.raises(sweep.SweepStopped):
        run(Limit(step=13))
    assert checkpoint_steps(results) == {key: 13 for key in first}
    path = run(None)
    pd.testing.assert_frame_equal(table(path), table(uninterrupted), check_exact=True)
    records = {r.trial.key: r for r in GridStore(results, "stops").records()}
    assert records[next(iter(first))].resumed_from_step == 13
    reference = {r.trial.key: r for r in GridStore.of_table(uninterrupted).records()}
    assert {k: r.members for k, r in records.items()} == {k: r.members for k, r in reference.items()}  # the curves too
    steps = [(s["from"], s["to"]) for s in records[next(iter(first))].segments]
    assert steps == [(0, 7), (7, 13), (13, 20)] and {s["type"] for s in records[next(iter(first))].segments} == {"cpu"}
    assert json.loads((results / "stops" / "sweep.json").read_text())["finished"] is True
    runs = runs_of(store, "stops")
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}  # 4 models and the sweep, each once
    client = mlflow.tracking.MlflowClient(store)
    for r in runs:
        if "icstn.run_key" in r.data.tags:
            assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == list(range(1, 21))


def test_a_ray_sweep_stops_every_running_trial_and_continues(tmp_path, data_root, store, uninterrupted):
    import ray

    grid, results = write_grid(tmp_path), tmp_path / "res"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(sweep.SweepStopped):
            sweep.sweep(grid, results, data_root / "processed", {}, executor="ray", limit=Limit(step=7))
        assert sorted(checkpoint_steps(results).values()) == [7, 7]  # both trials ran, both stopped there
        assert not (results / "stops.parquet").exists()
        assert set(statuses(store).values()) == {"KILLED"}
        path = sweep.sweep(grid, results, data_root / "processed", {}, executor="ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(table(path), table(uninterrupted), check_exact=True)
    assert len(statuses(store)) == 5 and set(statuses(store).values()) == {"FINISHED"}


def test_a_longer_budget_continues_the_shorter_trials(tmp_path, data_root, uninterrupted, capfd):
    results = tmp_path / "res"
    sweep.sweep(write_grid(tmp_path / "short", iterations=10), results, data_root / "processed", {}, "inline", track=False)
    before = {p: p.read_bytes() for p in (results / "stops" / "trials").glob("*/*.*") if p.suffix in (".json", ".pt")}
    path = sweep.sweep(write_grid(tmp_path / "long"), results, data_root / "processed", {}, "inline", track=False)
    assert "continuing trial" in capfd.readouterr().err
    pd.testing.assert_frame_equal(table(path), table(uninterrupted), check_exact=True)
    assert {p: p.read_bytes() for p in before} == before  # the shorter trials' records and final states stay whole
    records = [r for r in GridStore(results, "stops").records() if r.iterations == 20]
    shorter = {r.trial.model: r.trial.key for r in GridStore(results, "stops").records() if r.iterations == 10}
    assert len(records) == 2
    for r in records:
        assert r.continued_from == {"trial": shorter[r.trial.model], "step": 10} and r.resumed_from_step == 10


def test_a_trial_continues_only_on_the_type_of_device_it_trained_on(tmp_path, data_root, capfd):
    """A CPU trial continued on a GPU (or the reverse) would be neither device's result: its checkpoint is
    refused before any compute, and a shorter trial of the other type is not continued."""
    from icstn.checkpoint import CheckpointError

    grid, results = write_grid(tmp_path), tmp_path / "res"
    store = GridStore(results, "stops")
    with pytest.raises(sweep.SweepStopped):
        sweep.sweep(grid, results, data_root / "processed", {}, executor="inline", track=False, limit=Limit(step=7))
    key = next(iter(checkpoint_steps(results)))
    segments = store.segments(key)
    (store.folder(key) / "segments.json").write_text(json.dumps([segments[0] | {"device": "NVIDIA H200", "type": "cuda"}]))
    with pytest.raises(CheckpointError, match=r"trained on NVIDIA H200, up to step 7; this sweep runs on cpu"):
        sweep.sweep(grid, results, data_root / "processed", {}, executor="inline", track=False)
    assert checkpoint_steps(results) == {key: 7}  # nothing trained

    shorter = tmp_path / "shorter"
    sweep.sweep(write_grid(tmp_path / "s", iterations=10), shorter, data_root / "processed", {}, "inline", track=False)
    for record in GridStore(shorter, "stops").trial_keys():
        path = GridStore(shorter, "stops").folder(record) / "record.json"
        done = json.loads(path.read_text())
        path.write_text(json.dumps(done | {"segments": [s | {"device": "NVIDIA H200", "type": "cuda"} for s in done["segments"]]}))
    capfd.readouterr()
    sweep.sweep(write_grid(tmp_path / "l"), shorter, data_root / "processed", {}, "inline", track=False)
    assert "continuing trial" not in capfd.readouterr().err
    assert all(r.continued_from is None for r in GridStore(shorter, "stops").records() if r.iterations == 20)


def test_mlflow_holds_the_whole_curve_of_a_trial_continued_once_and_twice(tmp_path, data_root, store):
    results = tmp_path / "res"
    for i, iterations in enumerate((5, 10, 20)):
        path = sweep.sweep(write_grid(tmp_path / str(i), iterations=iterations), results, data_root / "processed", {}, "inline")
    df = pd.read_parquet(path)
    client = mlflow.tracking.MlflowClient(store)
    runs = {r.data.tags["icstn.run_key"]: r for r in runs_of(store, "stops") if "icstn.run_key" in r.data.tags}
    records = {r.trial.key: r for r in GridStore(results, "stops").records() if r.iterations == 20}
    assert len(records) == 2 and all(r.continued_from and r.continued_from["step"] == 10 for r in records.values())
    for key, record in records.items():
        for k, member in enumerate(record.members):
            run = runs[record.trial.member_key(k)].info.run_id
            history = {m.step: m.value for m in client.get_metric_history(run, "test_error")}
            row = df[(df.trial_key == key) & (df.seed == member.seed) & (df.metric == "test_error") & (df.curve_step.map(len) > 0)]
            assert len(row) == 1 and history == dict(zip(row.curve_step.iloc[0], row.curve_value.iloc[0]))
            assert min(history) < 5  # from the first, shortest trial's evaluations on
            losses = {m.step: m.value for m in client.get_metric_history(run, "train_loss")}
            assert losses == {step: value for step, value in member.curve}


@pytest.mark.parametrize("earlier", ["key", "store"])
def test_runs_of_an_earlier_version_are_found_again_not_duplicated(tmp_path, data_root, store, earlier):
    """A stopped trial's runs, made under an earlier version's key of it (``earlier='key'``) or before runs
    carried the store's id (``'store'``): the rerun that finishes it finishes them, and makes no others."""
    from pipeline import migrate

    grid, results = write_grid(tmp_path), tmp_path / "res"
    with pytest.raises(sweep.SweepStopped):
        sweep.sweep(grid, results, data_root / "processed", {}, executor="inline", limit=Limit(step=7))
    client, grid_store = mlflow.tracking.MlflowClient(store), GridStore(results, "stops")
    key = next(iter(checkpoint_steps(results)))
    if earlier == "key":
        (trial,) = [t for t in sweep.grids.expand(sweep.grids.load_grid(grid)) if t.key == key]
        old = migrate.legacy_keys(trial)[0]
        grid_store.folder(key).rename(grid_store.folder(old))
    for r in runs_of(store, "stops"):
        if earlier == "store":
            client.delete_tag(r.info.run_id, "icstn.store")
        elif r.data.tags.get("icstn.run_key", "").startswith(key):
            client.set_tag(r.info.run_id, "icstn.run_key", r.data.tags["icstn.run_key"].replace(key, old))
    sweep.sweep(grid, results, data_root / "processed", {}, executor="inline")
    runs = runs_of(store, "stops")
    children = [r for r in runs if "icstn.run_key" in r.data.tags]
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["icstn.store"] for r in children} == {grid_store.identity()}
    assert all(r.data.tags["icstn.run_key"].split("/")[0] in {t for t in grid_store.trial_keys()} for r in children)


def test_the_time_limit_stops_a_sweep_with_status_0(tmp_path, data_root):
    """The wall clock: where it stops the trial depends on the machine, so that is reported, not asserted."""
    grid = tmp_path / "align.yaml"
    grid.write_text(yaml.safe_dump(ALIGN))  # minutes of training: far beyond the limit
    args = ["--grid", grid, "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", "inline", "--no-tracking"]
    stopped = sweep_cli([*args, "--stop-after", "15s"], timeout=600)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "align: stopped at the time limit; rerun to continue (1 of 1 trial unfinished" in stopped.stderr
    assert not (tmp_path / "r" / "align.parquet").exists()
    assert json.loads((tmp_path / "r" / "align" / "sweep.json").read_text())["stopped"] == "the time limit"
    print(f"stopped at steps {checkpoint_steps_of(tmp_path / 'r' / 'align')}")


def checkpoint_steps_of(root) -> list[int]:
    return [torch.load(p, weights_only=True)["step"] for p in root.glob("trials/*/checkpoint.pt")]


def test_a_bad_time_limit_is_refused_before_any_compute(tmp_path):
    out = sweep_cli(["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--stop-after", "8"])
    assert out.returncode == 2 and "--stop-after: bad value '8'; allowed: a positive number with a unit, s, m or h" in out.stderr
    assert not (tmp_path / "r").exists()
    assert parse_duration("1.5h") == 5400 and parse_duration("90s") == 90 and parse_duration(" 8m ") == 480


def test_sigterm_checkpoints_every_running_trial_at_once(tmp_path, data_root):
    """A preempted node: SIGTERM stops the trial at its next step, checkpointed, and the sweep ends interrupted."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = tmp_path / "align.yaml"
    grid.write_text(yaml.safe_dump({**ALIGN, "iterations": 400, "eval_every": 100}))
    args = ["--grid", grid, "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", "inline"]
    cmd = [sys.executable, "-m", "pipeline.sweep", *map(str, args)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not checkpoint_steps_of(tmp_path / "r" / "align") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # past the periodic checkpoint at step 100
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130 and "interrupted: align: interrupted with 1 of 1 trial unfinished" in output, output[-3000:]
    steps = checkpoint_steps_of(tmp_path / "r" / "align")
    # written when the signal came (the trial's own line says so), not left at the last periodic one
    assert len(steps) == 1 and f"align [0/1] stopped c-STN-1 σ=5 seeds 0 at {steps[0]}/400 (checkpoint written)" in output, output[-3000:]
    print(f"SIGTERM: stopped at step {steps[0]}")
    assert "KILLED" in {r.info.status for r in runs_of(uri, "align")}
    rerun = sweep_cli(args, env={"MLFLOW_TRACKING_URI": uri}, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = json.loads(next((tmp_path / "r" / "align" / "trials").glob("*/record.json")).read_text())
    assert record["resumed_from_step"] == steps[0]
    assert {r.info.status for r in runs_of(uri, "align")} == {"FINISHED"}


def test_a_sigterm_after_the_time_limit_has_passed_is_still_an_interruption(tmp_path):
    """The signal and the limit can both have come by the time the sweep looks: the signal wins (status 130)."""
    store = GridStore(tmp_path, "g")
    store.root.mkdir()
    limit = Limit(deadline=time.time() - 1, request_file=str(tmp_path / "request"))
    with pytest.raises(sweep.SweepStopped):
        sweep._stopped("g", limit, "1 of 1 trial unfinished", store, {})
    limit.request()
    with pytest.raises(sweep.SweepInterrupted) as raised:
        sweep._stopped("g", limit, "1 of 1 trial unfinished", store, {})
    assert not isinstance(raised.value, sweep.SweepStopped)


def test_the_workflow_stops_at_its_time_limit_with_status_0_and_its_rerun_continues(tmp_path, mirror, data_root):
    work = mini_workflow(tmp_path / "w", {"tracking": {"enabled": False}}, iterations=300, eval_every=100)
    stopped = snakemake(work, mirror, "--config", "stop_after=1s")  # it expires before the sweep starts training
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped at the time limit (align); rerun to continue" in stopped.stderr
    assert not (work / "results" / "align.parquet").exists() and not (work / "reports" / "index.html").exists()
    assert json.loads((work / "results" / "align" / "sweep.json").read_text())["finished"] is False
    stop = json.loads((work / "results" / "align" / "sweep.json").read_text())["stop"]
    rerun = snakemake(work, mirror)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((work / "results" / "align" / "sweep.json").read_text())["continues"] == stop  # the rerun continued that stop
    assert (work / "reports" / "index.html").is_file() and len(pd.read_parquet(work / "results" / "align.parquet")) > 0
    again = snakemake(work, mirror, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def _files(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_commands_that_plan_change_no_file(tmp_path, mirror, data_root):
    """A dry run, --list, --summary and --lint leave the results, the MLflow store and the reports as they
    were, on a store with a stopped sweep (real), a finished one and a failed one (laid out as they leave them)."""
    work = mini_workflow(tmp_path / "w", {"tracking": {"uri": "sqlite:///mlflow.db"}}, iterations=300)
    stopped = snakemake(work, mirror, "--config", "stop_after=1s")
    assert stopped.returncode == 0 and json.loads((work / "results" / "align" / "sweep.json").read_text())["finished"] is False
    write_align_grid(work / "config" / "grids", name="done")
    write_align_grid(work / "config" / "grids", name="failed")
    (work / "results" / "done").mkdir()
    (work / "results" / "done" / "sweep.json").write_text(json.dumps({"finished": True, "keys": [], "continues": ""}))
    (work / "results" / "failed" / "trials" / "x").mkdir(parents=True)
    (work / "results" / "failed" / "trials" / "x" / "checkpoint.pt").write_bytes(b"state")
    (work / "reports").mkdir(exist_ok=True)
    (work / "reports" / "index.html").write_text("an earlier report")
    before = _files(work / "results", work / "reports") | {"db": (work / "mlflow.db").read_bytes()}
    for command in (["-n"], ["--list"], ["--summary"], ["--lint"]):
        out = snakemake(work, mirror, *command)
        assert out.returncode == 0, (command, out.stderr[-3000:])
        assert _files(work / "results", work / "reports") | {"db": (work / "mlflow.db").read_bytes()} == before, command
    plan = snakemake(work, mirror, "-n")
    assert "sweep" in plan.stdout and "align" in plan.stdout  # the stopped sweep is planned to run again
