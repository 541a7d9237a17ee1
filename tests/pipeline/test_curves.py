"""Learning curves: the results table's long view (pipeline.results.curves) and the figure
(pipeline.report.curves) on small hand-made results tables, with the project's grids, the
paper's numbers, the protocol and the committed reference run."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from icstn.train import eval_steps
from pipeline import grids, results
from pipeline.report import curves
from tests.conftest import PAPER_RESULTS, REPO

PROTOCOL = REPO / "config" / "protocol.csv"
GRIDS = {name: REPO / "config" / "grids" / f"{name}.yaml" for name in ("table1", "table2", "table3")}
EXPERIMENT = {"table1": "planar", "table2": "mnist", "table3": "gtsrb"}


def table(name: str, models: list[str], sigmas: list[float], iterations: int = 300, seeds=(0, 1)) -> pd.DataFrame:
    """A results table as a sweep writes it: per model, seed and sigma a test_error row whose curve
    falls from 80 (seed 1 a little higher), and a calibration row without a curve."""
    steps = eval_steps(iterations, 3)
    rows = []
    for model in models:
        for sigma in sigmas:
            for seed in seeds:
                values = [80.0 / (1 + s / 50) + seed for s in steps]
                common = {"grid": name, "experiment": EXPERIMENT[name], "model": model, "n_warps_train": 2, "n_warps_test": 2,
                          "member": seed, "seed": seed, "sigma_px": sigma, "noise_warp": "homography", "init": "code",
                          "lr_geometric": 1e-4, "iterations": iterations, "profile": "quick", "device": "cpu",
                          "git_commit": "abc123", "trial_key": f"{model}-{sigma}"}  # fmt: skip
                rows.append({**common, "metric": "test_error", "value": values[-1], "curve_step": steps, "curve_value": values})
                rows.append({**common, "metric": "linear_error", "value": 1.0, "curve_step": [], "curve_value": []})
    return pd.DataFrame(rows, columns=results.COLUMNS)


def three_tables():
    return {
        "table1": table("table1", ["c-STN-1", "IC-STN-2"], [2.5, 7.5, 10.0], iterations=200),
        "table2": table("table2", ["CNN(a)", "IC-STN-4(a)", "CNN(b)"], [3.5]),
        "table3": table("table3", ["CNN", "IC-STN-4"], [4.375], iterations=40),
    }


class TestCurvesView:
    def test_one_row_per_point_of_the_final_values_curves(self):
        df = table("table2", ["CNN(a)"], [3.5])
        long = results.curves(df)
        assert len(long) == 2 * len(eval_steps(300, 3))  # two seeds; the calibration row has no curve
        assert list(long[long.seed == 0].step) == eval_steps(300, 3) == [1, 2, 5, 10, 20, 50, 100, 200, 300]
        last = long[long.step == 300].set_index("seed").value
        assert last.to_dict() == df[df.metric == "test_error"].set_index("seed").value.to_dict()  # the last point is the final value

    def test_a_table_without_curves_gives_its_final_values(self):
        old = table("table2", ["CNN(a)"], [3.5]).drop(columns=["curve_step", "curve_value"])  # written before curves
        long = results.curves(old)
        assert list(long.step) == [300, 300] and list(long.value) == list(old[old.metric == "test_error"].value)

    def test_the_curves_survive_the_parquet(self, tmp_path):
        df = table("table2", ["CNN(a)"], [3.5])
        back = results.read(results.write(df, tmp_path / "table2.parquet"))
        assert list(back.curve_step.iloc[0]) == eval_steps(300, 3) and list(back.curve_value.iloc[0]) == df.curve_value.iloc[0]
        pd.testing.assert_frame_equal(results.curves(back), results.curves(df), check_dtype=False)


@pytest.fixture(scope="module")
def drawn():
    tables = [(grids.load_grid(GRIDS[name]), df) for name, df in three_tables().items()]
    fig, note = curves.draw(tables, PAPER_RESULTS, PROTOCOL, REPO / "reports" / "reference")
    yield fig, note
    curves.plt.close(fig)


class TestFigure:
    def test_a_log_x_panel_per_table_in_the_papers_order(self, drawn):
        fig, _ = drawn
        assert len(fig.axes) == 3
        assert [ax.get_title(loc="left") for ax in fig.axes] == [
            "Table 1: planar image alignment, σ = 7.5 px (of 2.5, 7.5, 10)",  # the experiment's default of the grid's levels
            "Table 2: perturbed MNIST",
            "Table 3: perturbed GTSRB",
        ]
        assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)

    def test_each_model_is_its_mean_curve_with_its_seeds_as_a_band(self, drawn):
        ax = drawn[0].axes[1]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines["CNN(a)"].get_xdata()) == eval_steps(300, 3)
        assert lines["CNN(a)"].get_ydata()[-1] == pytest.approx(80 / 7 + 0.5)  # the mean of seeds 0 and 1 at step 300
        pair = curves.plt.get_cmap("tab20")
        assert to_rgba(lines["CNN(a)"].get_color()) == pair(0) and to_rgba(lines["CNN(b)"].get_color()) == pair(1)  # one hue, (b) lighter
        assert lines["CNN(b)"].get_linestyle() == "--" and lines["CNN(a)"].get_linestyle() == "-"
        assert len(ax.collections) >= 3  # a band per model (and the reference's bars)
        band = ax.collections[0].get_paths()[0].vertices[:, 1]  # from the lowest seed's last point to the highest's first
        assert band.min() == pytest.approx(80 / 7) and band.max() == pytest.approx(80 / 1.02 + 1)

    def test_the_papers_value_sits_at_the_papers_budget(self, drawn):
        fig, note = drawn
        stars = {i: [line for line in ax.get_lines() if line.get_marker() == "*"] for i, ax in enumerate(fig.axes)}
        mnist = {line.get_ydata()[0]: line for line in stars[1]}
        assert sorted(mnist) == [1.230, 6.597, 19.065] and {line.get_xdata()[0] for line in stars[1]} == {200_000}  # the paper: 200K
        assert mnist[6.597].get_markerfacecolor() != "none"  # stated by the paper: filled
        planar = stars[0]
        assert sorted(line.get_ydata()[0] for line in planar) == [5.283, 9.491] and planar[0].get_xdata()[0] == 50_000  # σ = 7.5's
        assert all(line.get_markerfacecolor() == "none" for line in planar)  # the paper does not say: hollow, the paper profile's
        assert "paper: one run, at 50,000 iterations (the paper profile's; the paper does not say)" in note.replace("\n    · ", " · ")
        assert ("Table 2 · ours: profile quick, 300 iterations, 2 seeds, device cpu · reference (GPU): reference profile, 6,400 "
                "iterations, 5 seeds, NVIDIA H200 (6,400 of 200,000 iterations; no checkpoints: its next run starts afresh) · paper: "
                "one run, at 200,000 iterations\n") in note.replace("\n    · ", " · ")  # fmt: skip
        assert max(map(len, note.splitlines())) <= curves.NOTE_WIDTH  # broken between its parts: no line widens the figure

    def test_the_reference_runs_points_beside_ours(self, drawn):
        fig, _ = drawn
        ref = pd.read_parquet(REPO / "reports" / "reference" / "table2" / "table2.parquet")
        bars = fig.axes[1].containers  # the committed Table 2 reference: its final values at 6,400 iterations
        assert len(bars) == 3 and {tuple(c.lines[0].get_xdata()) for c in bars} == {(6400,)}
        cnn = ref[(ref.model == "CNN(a)") & (ref.metric == "test_error")].value
        colour = to_rgba(next(line.get_color() for line in fig.axes[1].get_lines() if line.get_label() == "CNN(a)"))
        mine = next(c for c in bars if to_rgba(c.lines[0].get_color()) == colour)
        assert mine.lines[0].get_ydata()[0] == pytest.approx(cnn.mean())
        assert fig.axes[0].containers and not fig.axes[2].containers  # the committed CPU reference of Table 1; none of Table 3

    def test_a_classifiers_chance_level(self, drawn):
        fig, _ = drawn
        unlabelled = [line for line in fig.axes[1].get_lines() if line.get_label().startswith("_")]
        dashed = [line.get_ydata()[0] for line in unlabelled if line.get_linestyle() == "--"]
        assert 88.65 in dashed and not [line for line in fig.axes[0].get_lines() if line.get_color() == "0.5"]


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_the_command_writes_png_and_pdf_from_results_tables(tmp_path):
    paths = []
    for name, df in three_tables().items():
        paths.append(str(results.write(df, tmp_path / "results" / f"{name}.parquet")))
    args = ["--results", *paths, "--grids", *map(str, GRIDS.values()), "--paper", str(PAPER_RESULTS), "--protocol", str(PROTOCOL),
            "--reference", str(tmp_path / "no-reference"), "--out", str(tmp_path / "figures")]  # fmt: skip
    assert curves.main(args) == 0
    png = tmp_path / "figures" / "learning_curves.png"
    assert png.stat().st_size > 20_000 and (tmp_path / "figures" / "learning_curves.pdf").is_file()
    from matplotlib.image import imread

    assert imread(png).shape[0] > imread(png).shape[1]  # three panels stacked: taller than wide
    assert np.ptp(imread(png)) > 0


def test_a_results_table_without_its_grid_is_one_error_line(tmp_path, capsys):
    path = results.write(table("table2", ["CNN(a)"], [3.5]), tmp_path / "table2.parquet")
    assert curves.main(["--results", str(path), "--grids", str(GRIDS["table1"]), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: no grid file among --grids is named table2.yaml")


def test_the_report_shows_the_learning_curves_before_the_tables(tmp_path):
    from pipeline.report import html

    facts = {"capacity": 1000, "test_samples": 2000, "lr_scale": 10.0, "models_per_step": 2, "cuda_graph": False, "tf32": False,
             "python": "3.11", "torch": "2.13.0", "ray": "2.60", "mlflow": "3.17", "data_fetched_from": "a mirror",
             "batch_size": 100}  # fmt: skip
    path = results.write(table("table2", ["CNN(a)"], [3.5]).assign(**facts), tmp_path / "results" / "table2.parquet")
    figures = tmp_path / "figures"
    args = (tmp_path / "data", figures, tmp_path / "tables", PAPER_RESULTS)
    page = html.render([path], [GRIDS["table2"]], *args, tmp_path / "index.html").read_text()
    assert "Learning curves" not in page  # not drawn: no section, and no broken image
    curves.render([path], [GRIDS["table2"]], figures, PAPER_RESULTS, PROTOCOL)
    page = html.render([path], [GRIDS["table2"]], *args, tmp_path / "index.html").read_text()
    section = page[page.index("<h2 id='learning-curves'>Learning curves</h2>") : page.index("<h2 id='table2'>")]
    assert "<img src='figures/learning_curves.png'" in section and "href='figures/learning_curves.pdf'" in section
    assert "both axes logarithmic, one panel per table" in section
