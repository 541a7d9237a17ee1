"""benchmarks.throughput prints one JSON object per measurement, each with its ratio to the in-run baseline."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_throughput_prints_json_lines():
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--model", "IC-STN-2(b)", "--device", "cpu",
           "--k", "2", "--steps", "2", "--warmup", "1"]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["mode"], r["k"]) for r in rows] == [("eager", 1), ("eager", 2), ("batched", 2)]
    assert rows[0]["baseline"] and rows[0]["ratio"] == 1.0
    for r in rows:
        assert {"model", "mode", "device", "k", "model_iters_per_s"} <= set(r) and r["model_iters_per_s"] > 0
        assert abs(r["ratio"] - r["model_iters_per_s"] / rows[0]["model_iters_per_s"]) < 0.01
