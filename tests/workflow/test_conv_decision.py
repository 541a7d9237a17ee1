"""benchmarks.conv_decision.decide: the default convolution changes only for a candidate that is
correct in every direction and wins by the stated margin at every model and K trials run; the
launch search's winners are those within the tolerance, and the kernels read them."""

import pytest

from benchmarks import conv_decision
from benchmarks.conv_decision import DIRECTIONS, MIN_GAIN, TRIAL_K, decide

SHAPES = ("4->8 7x7 on 22x22", "6->24 7x7 on 30x30")
MODELS = ("IC-STN-4(a)", "IC-STN-4")
TOLERANCE = 2e-3


def kernel_rows(triton_error=1e-5, **errors) -> list[dict]:
    """Both kernel formulations at every shape and direction; ``errors``: {direction: error} of Triton's."""
    rows = []
    for shape in SHAPES:
        for name, error, ms in (("grouped-tf32", 1e-4, 2.0), ("triton-tf32", triton_error, 1.0)):
            for d in DIRECTIONS:
                e = errors.get(d, error) if name == "triton-tf32" else error
                rows.append({"shape": shape, "formulation": name, "direction": d, "ms": ms, "error": e})
    return rows


def e2e_rows(ratio: float, ks=TRIAL_K) -> list[dict]:
    """The default (ratio 1) and Triton at ``ratio`` at each model and K."""
    rows = []
    for model in MODELS:
        for k in TRIAL_K:
            rows.append({"end_to_end": model, "k": k, "choice": "grouped", "model_iters_per_s": 100.0, "ratio": 1.0})
            if k in ks:
                rows.append({"end_to_end": model, "k": k, "choice": "triton", "model_iters_per_s": 100.0 * ratio, "ratio": ratio})
    return rows


UNMEASURED = [r for r in kernel_rows() if r["direction"] != "input" or r["formulation"] != "triton-tf32"]


@pytest.mark.parametrize(
    "kernels, e2e, why",
    [
        (kernel_rows(triton_error=1e-1), e2e_rows(1.5), "error 1.0e-01 > 0.002"),  # fast and wrong
        (kernel_rows(input=5e-3), e2e_rows(1.5), "input of 4->8 7x7 on 22x22: error 5.0e-03"),  # wrong in one direction
        (kernel_rows(weight=float("nan")), e2e_rows(1.5), "weight of 4->8 7x7 on 22x22: error nan"),
        (UNMEASURED, e2e_rows(1.5), "input of 4->8 7x7 on 22x22 not measured"),
        (kernel_rows(), e2e_rows(1.5, ks=(3, 32, 128)), "no step at [('IC-STN-4', 5), ('IC-STN-4(a)', 5)]"),  # a K the budget left out
        (kernel_rows(), e2e_rows(1.05), None),  # correct, but a 5% win is noise
        (kernel_rows(), e2e_rows(1.099), None),
    ],
    ids=["error-above-tolerance", "one-direction-wrong", "nan", "unmeasured-direction", "missing-k", "1.05x", "just-under-1.1x"],
)  # fmt: skip
def test_the_default_stays(kernels, e2e, why):
    _, decision = decide(kernels, e2e, TOLERANCE)
    assert decision["whole_model_choice"] == "grouped" and decision["default"] == "grouped"
    if why is None:
        assert decision["not_eligible"] == {} and decision["margin"]["triton"] < 0
    else:
        assert why in decision["not_eligible"]["triton"]


def test_a_correct_candidate_winning_by_the_margin_replaces_the_default():
    lines, decision = decide(kernel_rows(), e2e_rows(1.25), TOLERANCE)
    assert decision["whole_model_choice"] == "triton" and decision["e2e_geomean_ratio"] == {"grouped": 1.0, "triton": 1.25}
    assert decision["margin"] == {"triton": pytest.approx(1.25 / MIN_GAIN - 1, abs=1e-3)}  # the margin, in the output
    assert any(line.startswith("  triton: margin +13.6% over the 1.1x needed") for line in lines)
    # exactly the margin is enough; mixed ratios count by their geometric mean over models and K
    mixed = e2e_rows(1.21)
    for r in mixed:
        if r["choice"] == "triton" and r["k"] == 3:
            r["ratio"] = 1.0
    assert decide(kernel_rows(), mixed, TOLERANCE)[1]["whole_model_choice"] == "triton"  # (1.21^3)^(1/4) = 1.154


def test_a_choice_without_checked_kernels_is_never_chosen():
    rows = [r | {"choice": "gemm"} if r["choice"] == "triton" else r for r in e2e_rows(2.0)]
    decision = decide(kernel_rows(), rows, TOLERANCE)[1]
    assert decision["whole_model_choice"] == "grouped" and "checked against exact float32" in decision["not_eligible"]["gemm"]


def test_the_launch_search_keeps_the_fastest_setting_within_the_tolerance():
    key = "forward 6->24 7x7 on 30x30"
    rows = [
        {"launch": key, "setting": {}, "ms": 1.0, "error": 1e-5},
        {"launch": key, "setting": {"BLOCK_N": 256}, "ms": 0.5, "error": 1e-1},  # fastest, but wrong
        {"launch": key, "setting": {"BLOCK_N": 64, "num_warps": 4}, "ms": 0.8, "error": 1e-5},
        {"launch": "weight 6->24 7x7 on 30x30", "setting": {"BLOCK_N": 64}, "failed": "OutOfResources"},
        {"launch": "input 6->24 7x7 on 30x30", "setting": {}, "ms": 0.3, "error": 1e-5},  # today's is the fastest: nothing written
    ]
    assert conv_decision.fastest_launches(rows, TOLERANCE) == {key: {"BLOCK_N": 64, "num_warps": 4}}


def test_the_kernels_read_the_launch_settings_written_for_them(tmp_path, monkeypatch):
    """What the decision writes (--launches) is what the next launch of that layer and direction uses."""
    import json

    pytest.importorskip("triton")
    import torch

    from icstn import triton_conv

    path = tmp_path / "launches.json"
    path.write_text(json.dumps({"forward 6->24 7x7 on 30x30": {"BLOCK_N": 64, "num_warps": 2, "num_stages": 2}}))
    monkeypatch.setattr(triton_conv, "LAUNCHES_FILE", path)
    triton_conv._launches_file.cache_clear()
    try:
        x, w = torch.empty(100, 3 * 6, 30, 30, device="meta"), torch.empty(3, 24, 6, 7, 7, device="meta")
        forward = triton_conv._conv_launch(x, w, None, transposed=False)
        assert (forward.meta["BLOCK_N"], forward.meta["num_warps"], forward.meta["num_stages"]) == (64, 2, 2)
        assert forward.grid[0] == -(-100 * 24 * 24 // 64)  # the positions' tiles follow the block
        dy = torch.empty(100, 3 * 24, 24, 24, device="meta")
        assert triton_conv._conv_launch(dy, w, None, transposed=True).meta["BLOCK_N"] == 128  # another direction: today's
    finally:
        triton_conv._launches_file.cache_clear()
