"""pipeline.report.figures on hand-made results: what a grid's summary figure groups and draws."""

import pandas as pd

from pipeline.report import figures


def results_frame(**swept):
    """Test errors of one model, 2 seeds per combination of the ``swept`` settings."""
    rows, base = [], {"sigma_px": 3.5, "noise_warp": "homography", "init": None, "lr_geometric": 1e-5}
    combos = [{}] if not swept else [dict(zip(swept, values)) for values in zip(*swept.values())]
    for i, combo in enumerate(combos):
        for seed in (0, 1):
            rows.append({**base, **combo, "grid": "g", "experiment": "gtsrb", "model": "CNN", "seed": seed, "metric": "test_error",
                         "n_warps_test": 0, "n_warps_train": 0, "value": 10.0 * (i + 1) + seed})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_swept_init_is_its_own_series_not_pooled_with_the_other():
    groups = figures.series(results_frame(init=["code", "he"]))
    assert [label for _, label, _ in groups] == ["σ = 3.5 px, homography noise, init=code", "σ = 3.5 px, homography noise, init=he"]
    assert [g.value.mean() for _, _, g in groups] == [10.5, 20.5]  # each bar its own init's mean


def test_one_setting_is_one_series_named_by_noise_only():
    groups = figures.series(results_frame())
    assert [label for _, label, _ in groups] == ["σ = 3.5 px, homography noise"]
    assert [label for _, label, _ in figures.series(results_frame(lr_geometric=[1e-5, 1e-3]))][1].endswith("lr_geometric=0.001")


def test_a_classifiers_summary_draws_its_chance_level(monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, name, note: drawn.setdefault("fig", fig) and [])
    frame = results_frame(init=["code", "he"]).assign(profile="quick", iterations=40, device="cpu", git_commit="abc")
    figures.summary(frame, None, None, tmp_path)
    ax = drawn["fig"].axes[0]
    chance = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == 94.062  # GTSRB: always class 2
    assert "chance: always the commonest class (94.062%)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_figures_of_what_models_learnt_draw_the_references_models(monkeypatch, tmp_path):
    from tests.conftest import REPO

    root = REPO / "reports" / "reference"
    ref, table = figures.learnt_from("table2", figures.FIGURES["fig8"], root)
    assert table == root / "table2" / "table2.parquet" and set(ref.profile) == {"reference"}
    notes = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, name, note: notes.setdefault(name, note) and [])
    figures.FIGURES["fig8"].draw(ref, table, None, tmp_path, "IC-STN-4(a)", "STN(a)")
    assert notes["fig8"].startswith("models of the reference (GPU): profile reference, 6400 iterations, 5 seeds")
    assert figures.learnt_from("table2", figures.FIGURES["fig7"], root) is None  # a curve of errors: this run's own
    assert figures.learnt_from("table3", figures.FIGURES["fig10"], root) is None  # no reference of that grid
    (tmp_path / "table2").mkdir()
    ref.to_parquet(tmp_path / "table2" / "table2.parquet")  # a reference without its models' arrays
    (tmp_path / "table2" / "provenance.json").write_text("{}")
    assert figures.learnt_from("table2", figures.FIGURES["fig9"], tmp_path) is None
