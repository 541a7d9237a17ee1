"""The workflow on a real Slurm: a one-node cluster started on this machine (tests/workflow/slurm_node.py),
the shipped Snakemake profile workflow/profiles/slurm, and `snakemake --executor slurm`.

The sweep runs as a SLURM job with the resources the profile gives it; fetch runs in the submitting
process (a localrule). SLURM's time limit (--time, then SIGTERM) ends the sweep as a SIGTERM does,
its trials checkpointed, and the next run continues them (here up to its own stop_after).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icstn import checkpoint
from tests.conftest import REPO, data_env
from tests.workflow import slurm_node

pytestmark = pytest.mark.slow

# checkpoints every 100 steps; far more steps than a run has time for
GRID = {"experiment": "planar", "models": ["c-STN-1"], "noise_warp": "affine", "sigma_px": [2.5], "seeds": [0], "iterations": 200_000}
GRID["eval_every"] = 100
PROFILE = {"profile": "tiny", "budget": {"test_samples": 40}}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = slurm_node.missing()
    if why:
        if os.environ.get("ICSTN_REQUIRE_SLURM"):  # CI installs Slurm: there, a skip would hide a failure
            pytest.fail(why)
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("slurm")
    folder.chmod(0o700)  # munged refuses a socket folder others can write
    with slurm_node.one_node(folder) as env:
        yield env


def snakemake(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The shipped profile, told what this one-node Slurm lacks: accounting (squeue answers for sacct) and
    memory (the profile's sweep asks 32 GB), and to look at its jobs soon."""
    command = [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm", "--configfile", "tiny.yaml",
               "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
               "--default-resources", "mem_mb=1000", "runtime=10", "--set-threads", "sweep=2", *args]  # fmt: skip
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


def slurm_jobs(run: subprocess.CompletedProcess, rule: str) -> list[str]:
    """The SLURM job ids of a rule's jobs, as the executor reports each submission (it deletes a finished job's log)."""
    return re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_{rule}/", run.stderr)


def test_a_sweep_is_a_slurm_job_its_time_limit_stops_it_and_the_rerun_continues(slurm, tmp_path, mirror):
    work = tmp_path / "work"
    (work / "config" / "grids").mkdir(parents=True)
    shutil.copytree(REPO / "workflow", work / "workflow")
    for name in ("config.yaml", "paper_results.csv", "protocol.csv"):
        shutil.copy(REPO / "config" / name, work / "config" / name)
    shutil.copy(REPO / "environment.yml", work / "environment.yml")
    (work / "config" / "grids" / "align.yaml").write_text(yaml.safe_dump(GRID))
    (work / "tiny.yaml").write_text(yaml.safe_dump(PROFILE))
    env = {**slurm, **data_env(mirror), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{slurm['PATH']}", "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}  # fmt: skip

    # SLURM's time limit: 2 minutes, then SIGTERM to every process of the job
    first = snakemake(work, env, "--set-resources", "sweep:runtime=2", "sweep:mem_mb=2000")
    assert first.returncode != 0, first.stderr[-3000:]
    assert "localrule fetch:" in first.stderr and not slurm_jobs(first, "fetch")  # fetch ran here, not on a node
    assert len(slurm_jobs(first, "prepare")) == 1 and len(slurm_jobs(first, "sweep")) == 1, first.stderr[-3000:]
    job = slurm_node.job(slurm, slurm_jobs(first, "sweep")[0])
    assert (job["JobState"], job["TimeLimit"], job["NumCPUs"], job["Partition"]) == ("TIMEOUT", "00:02:00", "2", slurm_node.PARTITION)
    assert job["MinMemoryNode"] == "2000M", job
    log = (work / "logs" / "sweep" / "align.log").read_text()
    assert "interrupted: align: run the same command again to resume" in log, log[-3000:]
    [ckpt] = (work / "results" / "align" / "trials").glob("*/checkpoint.pt")
    stopped_at = checkpoint.read(ckpt)["step"]
    assert stopped_at >= 100

    # the same command again continues the trial from its checkpoint, here up to the run's own limit
    second = snakemake(work, env, "--set-resources", "sweep:runtime=10", "sweep:mem_mb=2000", "--config", "stop_after=80s")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "stopped at the time limit (align); rerun to continue" in second.stderr, second.stderr[-3000:]
    assert len(slurm_jobs(second, "sweep")) == 1 and not slurm_jobs(second, "prepare")
    assert "align: stopped at the time limit; rerun to continue" in (work / "logs" / "sweep" / "align.log").read_text()
    assert checkpoint.read(ckpt)["step"] > stopped_at
