"""pipeline.report.agreement on hand-made frames: intervals, Kendall's tau, diverged runs."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.report import agreement, tables


class TestCell:
    def test_a_prediction_interval_for_one_more_run(self):
        c = agreement.cell([11.0, 12.0, 13.0])
        assert c["ours_mean"] == 12.0 and c["n_seeds"] == 3 and c["diverged"] == 0 and c["dead"] == 0
        half = 4.302652729911275 * 1.0 * math.sqrt(1 + 1 / 3)  # t(0.975, 2) x sd x sqrt(1 + 1/n), not sd / sqrt(n)
        assert c["pi_low"] == pytest.approx(12.0 - half) and c["pi_high"] == pytest.approx(12.0 + half)

    def test_it_holds_a_fresh_run_95_percent_of_the_time(self):
        """The defining property, by simulation: a new draw from the seeds' distribution lands inside."""
        rng = np.random.default_rng(0)
        draws = rng.normal(50.0, 3.0, size=(4000, 5))
        hits = [(c := agreement.cell(d[:4]))["pi_low"] <= d[4] <= c["pi_high"] for d in draws]
        assert abs(np.mean(hits) - 0.95) < 0.015  # a confidence interval of the mean holds about 76% here

    def test_a_diverged_run_is_counted_and_left_out(self):
        c = agreement.cell([1.0, float("nan"), 3.0, float("inf")])
        assert c["ours_mean"] == 2.0 and c["n_seeds"] == 2 and c["diverged"] == 2
        assert agreement.cell([float("nan")])["n_seeds"] == 0 and math.isnan(agreement.cell([float("nan")])["ours_mean"])

    def test_the_interval_holds_only_what_an_error_can_be(self):
        wide = agreement.cell([2.0, 60.0])  # t(0.975, 1) x 41 = 521 each side
        assert wide["pi_low"] == 0.0 and wide["pi_high"] == pytest.approx(31.0 + 12.706204736 * 41.0122 * math.sqrt(1.5), rel=1e-4)
        assert agreement.cell([2.0, 60.0], upper=100.0)["pi_high"] == 100.0
        assert agreement.cell([40.0, 41.0, 42.0], upper=100.0)["pi_low"] == pytest.approx(41.0 - 4.302652729911275 * math.sqrt(4 / 3))

    def test_one_seed_has_no_interval(self):
        c = agreement.cell([4.0])
        assert c["ours_mean"] == 4.0 and c["ours_std"] == 0.0 and math.isnan(c["pi_low"])

    def test_a_dead_seed_is_counted_and_left_out(self):
        c = agreement.cell([22.8, 21.0, 88.65, 23.5, 24.0], upper=100.0, chance=88.65)  # CNN(a)'s seed that never learnt
        assert c["dead"] == 1 and c["n_seeds"] == 4 and c["ours_mean"] == pytest.approx((22.8 + 21.0 + 23.5 + 24.0) / 4)
        assert agreement.cell([22.8, 88.1], chance=88.65)["dead"] == 1  # a test subset's chance differs a little
        assert agreement.cell([22.8, 86.0], chance=88.65)["dead"] == 0
        assert agreement.cell([22.8, 88.65])["dead"] == 0  # no chance level (alignment): nothing is dead

    def test_a_cell_whose_every_seed_is_at_chance_is_itself_at_chance(self):
        c = agreement.cell([88.6, 88.7, 88.65], chance=88.65)
        assert c["dead"] == 0 and c["n_seeds"] == 3 and c["ours_mean"] == pytest.approx(88.65)


def frame(paper, runs):
    """A table like tables.build's: one row per cell, ``runs`` its values over seeds."""
    cells = [{"model": f"m{i}", "paper": p, **agreement.cell(r)} for i, (p, r) in enumerate(zip(paper, runs))]
    return agreement.compare(pd.DataFrame(cells))


class TestCompare:
    def test_inside_outside_and_unjudged(self):
        t = frame([2.0, 10.0, 1.0, None, 5.0], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [5.0], [1.0, 2.0], [1.0, 2.0]])
        assert t.pi_low.iloc[4] <= 5.0 <= t.pi_high.iloc[4]  # two seeds hold 5 in their interval, yet:
        assert t.agrees.tolist() == [True, False, pd.NA, pd.NA, pd.NA]
        assert t["diff"].iloc[1] == pytest.approx(-8.0) and t.diff_se.iloc[1] == pytest.approx(-8.0 / (1 / math.sqrt(3)))


class TestKendall:
    def test_a_perfect_ranking_gives_one_and_a_reversed_one_minus_one(self):
        assert agreement.kendall([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
        assert agreement.kendall([1, 2, 3, 4], [40, 30, 20, 10])[0] == pytest.approx(-1.0)

    def test_nans_are_left_out(self):
        tau, p, n = agreement.kendall([1, 2, 3, float("nan"), 5], [1, 2, 3, 4, float("nan")])
        assert n == 3 and tau == pytest.approx(1.0)
        assert math.isnan(agreement.kendall([1, float("nan")], [1, 2])[0])

    def test_its_p_value_is_the_exact_one(self):
        """No ties, n = 6: the exact null distribution of tau by enumerating all 720 orderings."""
        ours = [3, 1, 2, 6, 5, 4]
        tau, p, _ = agreement.kendall(range(6), ours)
        null = [stats.kendalltau(range(6), perm).statistic for perm in itertools.permutations(range(6))]
        assert p == pytest.approx(np.mean(np.abs(null) >= abs(tau) - 1e-12))


def test_a_scorecard():
    t = frame([1.0, 2.0, 3.0, 4.0, 5.0], [[0.9, 1.1, 1.3], [2.2, 1.9, 1.9], [float("nan"), 3.0, 3.2, 3.1], [9.0, 9.1, 9.2], [1.0, 9.0]])
    card = agreement.scorecard(t)
    assert card["tau"] == pytest.approx(0.8) and card["cells"] == 5 and card["diverged"] == 1
    assert card["agree"] == 3 and card["judged"] == 4 and card["fraction"] == 0.75  # the two-seed cell is not judged
    assert card["median_abs_diff"] == pytest.approx(0.1)  # |diffs| 0.1, 0, 0.1, 5.1, 0


def test_cells_at_chance_are_counted_and_left_out_of_tau():
    # paper 1..5; ours: two cells learnt (in the paper's order), three at chance in the reverse order
    t = frame([1.0, 2.0, 3.0, 4.0, 5.0], [[10.0, 11.0, 12.0], [20.0, 21.0, 22.0], [96.0] * 3, [95.0] * 3, [94.5] * 3])
    assert agreement.scorecard(t)["tau"] == pytest.approx(0.4)  # 7 pairs in order, 3 reversed: the chance cells' noise
    card = agreement.scorecard(t, chance=94.062)
    assert card["at_chance"] == 3 and card["rows"] == 5 and card["cells"] == 2 and card["tau"] == pytest.approx(1.0)
    assert agreement.scorecard(t)["at_chance"] is None  # an alignment table has no chance level


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_the_chance_levels_are_the_test_sets_commonest_class(data_root, gtsrb_root):
    from icstn import data, experiments

    for name, root in (("mnist", data_root), ("gtsrb", gtsrb_root)):
        counts = data.read_manifest(root / "processed", name)["class_counts"]["test"]
        assert experiments.get(name).chance_error == pytest.approx(100 * (1 - max(counts.values()) / sum(counts.values())), abs=1e-3)
    assert experiments.get("planar").chance_error is None


def test_a_table_shows_diverged_runs():
    t = frame([1.0], [[1.0, float("nan"), 1.2]]).assign(sigma_px=3.5, capacity=10, paper_capacity=10)
    pretty = tables.formatted(t, "mnist")
    assert pretty["ours (mean ± std, n)"].iloc[0] == "1.100 ± 0.141 (2), 1 diverged"


def test_dead_seeds_are_shown_in_the_table_and_counted_in_the_scorecard():
    cells = [{"model": "m0", "paper": 6.6, **agreement.cell([22.8, 88.65, 21.0], 100.0, chance=88.65)},
             {"model": "m1", "paper": 2.0, **agreement.cell([3.0, 88.2, 88.4, 4.0], 100.0, chance=88.65)}]  # fmt: skip
    t = agreement.compare(pd.DataFrame(cells)).assign(sigma_px=3.5, capacity=10)
    assert tables.formatted(t, "mnist")["ours (mean ± std, n)"].tolist() == ["21.900 ± 1.273 (2), 1 dead",
                                                                                              "3.500 ± 0.707 (2), 2 dead"]  # fmt: skip
    assert agreement.scorecard(t, chance=88.65)["dead"] == 3


def test_a_grid_without_paper_values_still_shows_its_intervals():
    t = frame([2.0], [[1.0, 2.0, 3.0]]).drop(columns="paper").assign(sigma_px=3.5, capacity=10)
    pretty = tables.formatted(t, "mnist")  # an ablation: its caption promises 95% prediction intervals
    assert pretty["95% prediction interval"].iloc[0] == f"[{t.pi_low.iloc[0]:.3f}, {t.pi_high.iloc[0]:.3f}]" != ""
    assert "paper" not in pretty and "agrees" not in pretty
