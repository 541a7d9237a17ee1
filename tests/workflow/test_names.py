"""What a user names: a results folder that is a symlink to elsewhere gets every file of the sweep
in its target, and nothing is written beside it."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.workflow.test_attack import write_grid

pytestmark = pytest.mark.slow  # trains


def test_a_symlinked_results_folder_holds_everything_and_nothing_is_written_outside(tmp_path, data_root):
    work, target = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), target.mkdir()
    (work / "results").symlink_to("../elsewhere")
    grid = write_grid(tmp_path, iterations=5, test_samples=20)
    before = {p for p in tmp_path.rglob("*")}
    cmd = [sys.executable, "-m", "pipeline.sweep", "--grid", grid, "--out", "results", "--data", data_root / "processed",
           "--executor", "inline", "--no-tracking"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(list(map(str, cmd)), cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(p.is_relative_to(target) for p in written), sorted(written)
    assert (target / "align.parquet").is_file() and (target / "align" / "sweep.json").is_file()
