"""What a GPU window runs, run here first: benchmarks/device_check.sh ends non-zero naming a failing
CUDA test, and the window's whole command (decision, CUDA tests, reference, pack, unpack) runs on
the CPU with tiny budgets, so that a window never meets a broken command."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline import reference
from tests.conftest import REPO, data_env
from tests.workflow import test_stop as stops

FAILING = """
def test_triton_passes():
    assert True


def test_triton_fails():
    assert 1 == 2
"""


def test_device_check_ends_non_zero_naming_the_failing_cuda_test(tmp_path):
    tests = tmp_path / "test_fake_cuda.py"
    tests.write_text(FAILING)
    env = os.environ | {"OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "CUDA_TESTS": str(tests), "DEVICE": "cuda"}
    run = subprocess.run(["bash", "benchmarks/device_check.sh", "conv"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("CUDA tests failed: ") and "test_fake_cuda.py::test_triton_fails" in last
    assert "test_triton_passes" not in last
    assert "no CUDA device" in run.stdout  # the decision still ran after the failure


def run_script(script: str, args: list[str], out, **env) -> subprocess.CompletedProcess:
    """A benchmarks/ script as a GPU machine runs it, here on the CPU, with this Python."""
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable, **{k: str(v) for k, v in env.items()}}
    return subprocess.run(["bash", f"benchmarks/{script}", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def table(path) -> pd.DataFrame:
    """A results table's metric columns (no timing, device or commit), in a fixed row order."""
    return stops.table(path, ["seconds", "device", "git_commit"])


@pytest.fixture(scope="module")
def window(tmp_path_factory, mirror):
    """The window's command on the CPU: the decision with a tiny budget, the CUDA tests (skipped here),
    and a reference of a tiny grid in two processes, packed."""
    tmp = tmp_path_factory.mktemp("window")
    grid = stops.write_grid(tmp / "grid", "tiny")
    decision = ("--models mnist:IC-STN-2(b) --k 2 --batch 2 --reps 1 --formulations grouped-tf32 triton-tf32 --e2e-k 3 "
                "--choices grouped triton --steps 1 --warmup 1 --search")  # fmt: skip
    env = {"DEVICE": "cpu", "DECISION_ARGS": decision, "BUDGET": 60, "SEEDS": 2, "PROCESSES": 2, "REFERENCE": tmp / "none"}
    run = run_script("gpu_window.sh", [str(grid), "2"], tmp / "out", **env | data_env(mirror))
    return tmp, grid, run, env | data_env(mirror)


@pytest.mark.slow  # the window's command with tiny budgets: about a minute on 2 cores
def test_the_gpu_windows_command_runs_on_a_cpu(window, tmp_path):
    tmp, _, run, _ = window
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp / "out"
    decision = [json.loads(line) for line in (out / "decision" / "results.jsonl").read_text().splitlines()][-1]
    assert decision["decision"] == "conv" and decision["whole_model_choice"] == "grouped"  # the CPU cannot run Triton: never chosen
    assert "triton" in decision["not_eligible"]
    log = (out / "reference" / "log.txt").read_text()
    assert "reference of tiny on a CPU: 2 process(es), 1 torch thread each" in log and "unpack it in the checkout:" in log
    folder = reference.unpack(out / "reference" / "tiny.tar.gz", tmp_path / "reference")
    assert folder == tmp_path / "reference" / "tiny-cpu"
    df, facts = reference.load("tiny", tmp_path / "reference", "CPU")
    assert facts["kind"] == "CPU" and reference.progress(facts) == "tiny reference (CPU): 20 of 20 iterations, all 2 trials"
    assert {k: facts["runs"][-1][k] for k in ("kind", "processes", "threads")} == {"kind": "CPU", "processes": 2, "threads": 1}
    assert "reference (CPU)" in reference.note(facts) and "x 2 processes" in reference.note(facts)
    assert not list(folder.rglob("*.pt"))  # finished at the grid's own iterations: nothing to continue


@pytest.mark.slow  # a second, one-process run of the tiny reference
def test_two_processes_train_each_trial_once_and_pack_what_one_process_does(window):
    tmp, grid, run, env = window
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp / "out" / "reference" / "log.txt").read_text()
    trained = re.findall(r"trial (\S+): training", log)
    assert len(trained) == 2 and len(set(trained)) == 2  # each trial by one of the two processes
    alone = run_script("reference_run.sh", [str(grid), "2"], tmp / "alone", **env | {"PROCESSES": 1})
    assert alone.returncode == 0, alone.stderr[-3000:]
    two, one = (reference.unpack(p / "tiny.tar.gz", p / "unpacked") for p in (tmp / "out" / "reference", tmp / "alone"))
    pd.testing.assert_frame_equal(table(two / "tiny.parquet"), table(one / "tiny.parquet"), check_exact=True)


@pytest.mark.slow  # trains a trial, then stops the sweep
def test_a_sweep_stopped_half_way_still_packs_what_it_trained(tmp_path, mirror):
    """A TERM once the first of two trials has finished (a scheduler, a window's end): the sweep ends
    interrupted (130), and the archive holds the finished trial and the other's checkpoint."""
    grid = stops.write_grid(tmp_path / "grid", "tiny", models=["CNN(b)"], iterations=2000, eval_every=1000)
    work, out = tmp_path / "work", tmp_path / "out"
    env = {"SEEDS": 2, "PROCESSES": 1, "REFERENCE": tmp_path / "none", "EXTRA": '{"pack": 1}', "WORK": work, "OUT": out}
    env = os.environ | {"PYTHON": sys.executable} | {k: str(v) for k, v in (env | data_env(mirror)).items()}
    script = subprocess.Popen(["bash", "benchmarks/reference_run.sh", str(grid), "10"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        for _ in range(1200):  # the first trial's record, and the second taken (its folder): it checkpoints as it stops
            if list(work.glob("results/tiny/trials/*/record.json")) and len(list(work.glob("results/tiny/trials/*"))) == 2:
                break
            time.sleep(0.25)
        script.send_signal(signal.SIGTERM)
        output = script.communicate(timeout=300)[0]
    finally:
        script.kill()
    assert script.returncode == 130, output[-3000:]
    folder = reference.unpack(out / "tiny.tar.gz", tmp_path / "reference")
    facts = reference.facts_of("tiny", tmp_path / "reference", "CPU")
    assert [s["finished"] for s in facts["trials"].values()].count(True) == 1
    unfinished = next(k for k, s in facts["trials"].items() if not s["finished"])
    assert facts["trials"][unfinished]["continuable"] and (folder / "tiny" / "trials" / unfinished / "checkpoint.pt").is_file()
    assert "sweep: " in output and "exit 130" in output
