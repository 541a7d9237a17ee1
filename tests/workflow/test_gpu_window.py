"""What a GPU window runs, run here first: benchmarks/device_check.sh ends non-zero naming a failing
CUDA test, and the window's whole command (decision, CUDA tests, reference, pack, unpack) runs on
the CPU with tiny budgets, so that a window never meets a broken command."""

import os
import subprocess
import sys

from tests.conftest import REPO

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
