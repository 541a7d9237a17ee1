"""A time limit that stops the sweep a requested results table needs (snakemake results/<grid>.parquet)
ends as the stop it is: the stop line last, status 0, none of Snakemake's error messages; the rerun
continues and makes the table."""

import pytest

from tests.workflow.test_attack import mini_workflow, snakemake

pytestmark = pytest.mark.slow  # runs snakemake and trains


def test_a_stopped_target_reads_as_a_stop_and_its_rerun_makes_it(tmp_path, mirror, data_root):
    work = mini_workflow(tmp_path / "w", {"tracking": {"enabled": False}}, iterations=300, eval_every=100)
    stopped = snakemake(work, mirror, "results/align.parquet", "--config", "stop_after=1s")  # expires before training starts
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 0, said[-3000:]
    assert said.rstrip().splitlines()[-1] == "stopped at the time limit (align); rerun to continue", said[-3000:]
    assert "align: stopped at the time limit, no results table yet; rerun to continue" in said
    for noise in ("RuleException", "CalledProcessError", "Error in rule", "Exiting because a job execution failed", "WorkflowError"):
        assert noise not in said, said[-3000:]
    assert not (work / "results" / "align.parquet").exists()
    rerun = snakemake(work, mirror, "results/align.parquet")
    assert rerun.returncode == 0 and (work / "results" / "align.parquet").is_file(), rerun.stderr[-3000:]


def test_a_results_step_that_fails_is_still_a_failure(tmp_path, mirror, data_root):
    work = mini_workflow(tmp_path / "w", {"tracking": {"enabled": False}}, iterations=300, eval_every=100)
    (work / "results").mkdir()
    (work / "results" / "align.parquet").mkdir()  # the table cannot be written: a failure, not a stop
    run = snakemake(work, mirror, "results/align.parquet", "--config", "stop_after=1h", "--forcerun", "results")
    assert run.returncode == 1 and "Error in rule" in run.stdout + run.stderr
