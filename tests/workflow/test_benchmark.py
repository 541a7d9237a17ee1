"""benchmarks.throughput: one JSON object per measurement, ratios to the in-run baseline, and the projected cost;
benchmarks.conv_decision's plumbing on a CPU."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out


def run(*args) -> list[dict]:
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--device", "cpu", "--steps", "2", "--warmup", "1", *args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_throughput_prints_json_lines():
    rows = run("--model", "IC-STN-2(b)", "--modes", "eager", "batched", "batched+graph", "--k", "2", "--profile")
    measured = [r for r in rows if "mode" in r]
    assert [(r["mode"], r["k"]) for r in measured] == [("eager", 1), ("eager", 2), ("batched", 2), ("batched+graph", 2)]
    assert measured[0]["baseline"] and measured[0]["ratio"] == 1.0
    for r in measured[:3]:
        assert {"model", "mode", "device", "k", "model_iters_per_s"} <= set(r) and r["model_iters_per_s"] > 0
        assert abs(r["ratio"] - r["model_iters_per_s"] / measured[0]["model_iters_per_s"]) < 0.01
    assert "CUDA" in measured[3]["skipped"]  # no CUDA graph on a CPU, and it says so
    ops = [r for r in rows if "op" in r]
    assert 0 < len(ops) <= 10 and sum(r["share"] for r in ops) <= 1.0001
    assert any(w in r["op"] for r in ops for w in ("convolution", "mm"))  # the step's real work (a CPU's one-channel layers: matmuls)


def test_projected_cost_of_a_profile(tmp_path):
    (tmp_path / "grids").mkdir()
    grid = {"experiment": "mnist", "models": ["CNN(b)", "STN(b)"], "seeds": [0, 1, 2], "sigma_px": [1.0, 2.0], "iterations": 50000}
    (tmp_path / "grids" / "g.yaml").write_text(yaml.safe_dump(grid))
    config = {"profile": "tiny", "grids": str(tmp_path / "grids"), "pack": 4, "budget": {"iterations": 1000}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        r
        for r in run("--model", "CNN(b)", "--k", "1", "--modes", "eager", "--project", "--config", str(tmp_path / "config.yaml"))
        if "project" in r
    ]
    timed = [r for r in rows if "model" in r]
    assert sorted((r["model"], r["k"]) for r in timed) == [("CNN(b)", 3), ("STN(b)", 3)]  # 6 members: 2 trials of 3
    per_grid, total = rows[-2], rows[-1]
    expected = sum(1000 * 6 / r["model_iters_per_s"] / 3600 for r in timed)  # budgeted iterations x members / rate
    assert per_grid["project"] == "g" and per_grid["iterations"] == 1000
    assert per_grid["device_hours"] == pytest.approx(expected, abs=1e-3)
    assert total["project"] == "total" and total["profile"] == "tiny" and total["device_hours"] == per_grid["device_hours"]


def test_default_modes_measure_the_devices_fast_path():
    rows = [r for r in run("--model", "IC-STN-2(b)", "--k", "2") if "mode" in r]
    assert [(r["mode"], r["k"]) for r in rows] == [("eager", 1), ("batched", 2)]  # the baseline, then what a CPU trial runs
    assert rows[1]["model_iters_per_s"] > 0 and "skipped" not in rows[1]


def test_fit_sizes_a_grids_iterations_to_a_time(tmp_path):
    (tmp_path / "grids").mkdir()
    for name, model in (("g", "CNN(b)"), ("other", "STN(b)")):
        grid = {"experiment": "mnist", "models": [model], "seeds": [0, 1], "sigma_px": [1.0], "iterations": 50000}
        (tmp_path / "grids" / f"{name}.yaml").write_text(yaml.safe_dump(grid))
    config = {"profile": "tiny", "grids": str(tmp_path / "grids"), "pack": 4, "budget": {"iterations": 1000}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    def fit(seconds: str) -> tuple[list[dict], dict]:
        rows = run("--k", "--project", "--config", str(tmp_path / "config.yaml"), "--grids", "g", "--fit", seconds)
        return [r for r in rows if r.get("project") and "model" in r], next(r for r in rows if "fit" in r)

    timed, generous = fit("1e9")
    assert [r["model"] for r in timed] == ["CNN(b)"]  # only the grid asked for
    assert generous == {**generous, "fit": "g", "iterations": 1000}  # never above the profile's
    assert fit("1e-6")[1]["iterations"] == 100  # never below 100


def test_sharing_sums_the_processes():
    cmd = [sys.executable, "-m", "benchmarks.sharing", "--device", "cpu", "--k", "2", "--processes", "1", "2", "--seconds", "0.5"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    one, two = [json.loads(line) for line in out.splitlines()]
    assert (one["processes"], two["processes"]) == (1, 2) and len(two["per_process"]) == 2
    assert two["model_iters_per_s"] == pytest.approx(sum(two["per_process"]), abs=0.02)
    ratio = two["model_iters_per_s"] / one["model_iters_per_s"]
    assert one["ratio_to_one_process"] == 1.0 and two["ratio_to_one_process"] == pytest.approx(ratio, rel=1e-2)


def test_conv_and_layout_switches_change_what_is_measured_not_the_baseline():
    rows = [r for r in run("--model", "IC-STN-2(b)", "--k", "2", "--conv", "gemm", "--layout", "nchw") if "mode" in r]
    assert rows[0]["baseline"] and "conv" not in rows[0] and "layout" not in rows[0]
    assert (rows[1]["conv"], rows[1]["layout"]) == ("gemm", "nchw") and rows[1]["model_iters_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU it would run the whole decision")
def test_conv_decision_without_cuda_says_so_in_one_line(capsys):
    from benchmarks import conv_decision

    assert conv_decision.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no CUDA device" in json.loads(lines[0])["skipped"]


def test_conv_decision_dry_runs_on_a_cpu(capsys, tmp_path):
    """The plumbing on a CPU: one shape (CNN(b)'s 9x9 classifier, via IC-STN-2(b)), the end-to-end step, the decision."""
    from benchmarks import conv_decision

    args = ["--device", "cpu", "--models", "mnist:IC-STN-2(b)", "--k", "2", "--batch", "2", "--reps", "1", "--formulations",
            "grouped-tf32", "grouped-bf16-nhwc", "triton-fp32", "--e2e-k", "1", "--choices", "grouped", "gemm", "--steps", "1",
            "--warmup", "1", "--max-error", "1e-6", "--table", str(tmp_path / "table.txt")]  # fmt: skip
    assert conv_decision.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    timed = [(r["formulation"], r.get("direction")) for r in rows if "formulation" in r]
    directions = ["forward", "input", "weight"]
    assert timed == [("grouped-tf32", d) for d in directions] + [("grouped-bf16-nhwc", d) for d in directions] + [("triton-fp32", None)]
    by = {(r["formulation"], r.get("direction")): r for r in rows if "formulation" in r}
    assert all(by["grouped-tf32", d]["error"] == 0.0 and by["grouped-tf32", d]["ms"] > 0 for d in directions)  # the reference itself
    assert all(1e-4 < by["grouped-bf16-nhwc", d]["error"] < 2e-2 for d in directions)  # bfloat16's rounding, measured
    assert "failed" in by["triton-fp32", None]  # no CUDA, no interpreter: a row that says why, and the run goes on
    e2e = [r for r in rows if "end_to_end" in r]
    assert [(r["choice"], r["k"]) for r in e2e] == [("grouped", 1), ("gemm", 1)] and e2e[0]["ratio"] == 1.0
    decision = rows[-1]
    assert decision["winner_per_shape"] == {"1->3 9x9 on 28x28": "grouped-tf32"}  # the only one within 1e-6
    assert set(decision["e2e_geomean_ratio"]) == {"grouped", "gemm"} and decision["default"] == "grouped"
    assert decision["whole_model_choice"] == "grouped" and "gemm" in decision["not_eligible"]  # its kernels were not checked
    assert "winner per shape" in (tmp_path / "table.txt").read_text()


def test_the_cpu_suite_measures_the_fast_path_against_the_baseline_path():
    rows = run("--suite", "planar:c-STN-1", "--k", "2", "--repeat", "1")
    assert [r["suite"] for r in rows] == ["matmul", "cpu", "matmul"]
    row = rows[1]
    assert (row["experiment"], row["model"], row["k"]) == ("planar", "c-STN-1", 2)
    assert row["ratio_to_baseline"] == pytest.approx(row["model_iters_per_s"] / row["baseline_model_iters_per_s"], rel=0.01)
    steps_per_s = row["model_iters_per_s"] / 2
    assert row["gflop_per_step"] > 0 and row["gflop_per_s"] == pytest.approx(row["gflop_per_step"] * steps_per_s, rel=0.02, abs=0.01)
    assert row["matmul_share"] == pytest.approx(row["gflop_per_s"] / rows[0]["gflop_per_s"], rel=0.02, abs=1e-4)


def test_projection_against_the_baseline_path(tmp_path):
    (tmp_path / "grids").mkdir()
    grid = {"experiment": "mnist", "models": ["STN(b)"], "seeds": [0, 1], "sigma_px": [1.0], "iterations": 50000}
    (tmp_path / "grids" / "g.yaml").write_text(yaml.safe_dump(grid))
    config = {"profile": "tiny", "grids": str(tmp_path / "grids"), "pack": 2, "budget": {"iterations": 1000}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [r for r in run("--k", "--project", "--against-baseline", "--config", str(tmp_path / "config.yaml")) if "project" in r]
    (timed,), per_grid, total = [r for r in rows if "model" in r], rows[-2], rows[-1]
    assert timed["ratio_to_baseline"] == pytest.approx(timed["model_iters_per_s"] / timed["baseline_model_iters_per_s"], rel=0.01)
    expected = 1000 * 2 / timed["baseline_model_iters_per_s"] / 3600
    assert (
        per_grid["baseline_device_hours"] == pytest.approx(expected, abs=1e-3)
        and total["baseline_device_hours"] == per_grid["baseline_device_hours"]
    )
