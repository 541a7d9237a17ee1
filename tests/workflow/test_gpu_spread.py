"""Every GPU of a node busy: the paper profile's three grids, swept side by side on one Ray runtime
that declares 4 GPUs (on a CPU: Ray hands out GPU ids it does not check), run their trials at
once across all 4, each trial seeing its own CUDA_VISIBLE_DEVICES.

Each sweep runs its grid's real trials (the paper budget, CUDA's models per trial) through the
Tune executor, with a probe in place of training: it records its GPU, then waits until 4 trials
are running, so that what runs at once is what the runtime let start, whatever this machine's speed.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

GPUS = 4
HOLD = 2  # seconds a probe runs on after it saw the others start (SWEEP's HOLD)
GRIDS = ("table1", "table2", "table3")

# One runtime for the node, as `ray start --head --num-gpus=4` would start it; held while stdin is open.
RUNTIME = """
import ray, sys
ray.init(num_cpus=32, num_gpus=4, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
"""

# One sweep: a paper grid's trials, as pipeline.sweep plans them on CUDA, through the Tune executor.
SWEEP = """
import json, os, sys, time
from pathlib import Path

from pipeline import grids, settings
from pipeline.executors import tune
from pipeline.runner import Context

grid_file, out, want = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
probes = out / "probes"
HOLD = 2


def probe(config):
    import ray
    from pipeline.trial import Trial

    trial = Trial.from_dict(config["trial"])
    mine = probes / f"{trial.grid}-{trial.key}"
    facts = {"grid": trial.grid, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
    mine.with_suffix(".start").write_text(json.dumps(facts | {"at": time.time()}))
    end = time.monotonic() + 90
    while len(list(probes.glob("*.start"))) < want and time.monotonic() < end:
        time.sleep(0.2)
    running = len(list(probes.glob("*.start"))) - len(list(probes.glob("*.end")))
    mine.with_suffix(".end").write_text(json.dumps({"at": time.time(), "running": running}))
    time.sleep(HOLD)  # still running while the next trials start


config = settings.with_defaults(settings.load_profile("paper") | {"device": "cuda", "ray": {"address": os.environ["RAY_ADDRESS"]}})
grid = grids.load_grid(grid_file, config["budget"])
trials = grids.expand(grid, settings.models_per_trial(config["pack"], "cuda"))
ctx = Context(str(out / "data"), str(out), "cuda", False)
tune._tune(trials, ctx, config, None, grid.name, trainable=probe)
print(f"{grid.name}: {len(trials)} trials", flush=True)
"""


@pytest.fixture
def runtime():
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    holder = subprocess.Popen([sys.executable, "-c", RUNTIME], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = holder.stdout.readline().strip()
        assert address, "the Ray runtime did not start"
        yield {**env, "RAY_ADDRESS": address}
    finally:
        holder.stdin.close()  # the runtime's driver ends, and Ray's processes with it
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()


def test_the_paper_grids_side_by_side_fill_every_declared_gpu(runtime, tmp_path):
    (tmp_path / "probes").mkdir()
    env = {**runtime, "PYTHONPATH": str(REPO)}
    sweeps = [
        subprocess.Popen(
            [sys.executable, "-c", SWEEP, str(REPO / "config" / "grids" / f"{g}.yaml"), str(tmp_path), str(GPUS)],
            cwd=REPO,  # the paper profile: config/config.yaml
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for g in GRIDS
    ]
    outputs = [p.communicate(timeout=600)[0] for p in sweeps]
    for p, out in zip(sweeps, outputs):
        assert p.returncode == 0, out[-3000:]
    starts = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "probes").glob("*.start")}
    ends = {p.stem: json.loads(p.read_text())["at"] + HOLD for p in (tmp_path / "probes").glob("*.end")}
    assert len(starts) == len(ends) == 5 + 12 + 5  # every trial of the three grids ran
    assert {s["grid"] for s in starts.values()} == set(GRIDS)
    for s in starts.values():  # each trial sees the one GPU Ray gave it, not the node's four
        assert s["cuda"] is not None and s["cuda"].split(",") == s["gpu_ids"] and len(s["gpu_ids"]) == 1, s
    assert {s["cuda"] for s in starts.values()} == {str(i) for i in range(GPUS)}

    def running(t: float) -> list[dict]:
        return [starts[k] for k in starts if starts[k]["at"] <= t < ends[k]]

    moments = [running(starts[k]["at"]) for k in starts]  # at each start, what ran
    most = max(moments, key=len)
    several = max(moments, key=lambda r: (len({s["grid"] for s in r}), len(r)))
    print(f"at most {len(most)} trials at once, on GPUs {sorted({s['cuda'] for s in most})}; "
          f"grids at once: {sorted({s['grid'] for s in several})}")  # fmt: skip
    # Ray places fractional shares of several grids where they fit: at that moment on 2 or more of the GPUs
    # (every GPU was used over the run, as asserted above), not always all four
    assert len(most) >= GPUS and len({s["cuda"] for s in most}) >= 2
    assert len({s["grid"] for s in several}) >= 2


@pytest.mark.parametrize("ray, cores", [([], "4"), (["--config", 'ray={address: "127.0.0.1:6379"}'], "1")])
def test_sweeps_on_a_ray_runtime_they_join_run_side_by_side(ray, cores):
    """A sweep takes every core when it starts its own Ray runtime (sweeps take turns), one when it joins one."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "4", "--configfile", "config/quick.yaml", *ray]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sweeps = [line for line in out.stdout.splitlines() if "python -m pipeline.sweep" in line]
    assert sweeps and all(f" --cores {cores} " in line for line in sweeps), sweeps
