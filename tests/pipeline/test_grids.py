"""Grid and profile mistakes that once passed validation and failed only after compute: now each
fails at load time, naming the file and the key. And a profile's budget only ever lowers a grid."""

import json
import tempfile
from pathlib import Path

import pytest
import yaml

from icstn import models
from pipeline import grids, schema, settings
from pipeline.report.figures import FIGURES, figure_owners
from tests.conftest import REPO

BASE = {"experiment": "mnist", "models": ["IC-STN-2(b)"], "seeds": [0, 1], "iterations": 20}


#: a tiny MNIST grid: these tests load it, the sweep and stop tests train it
TINY = {
    "experiment": "mnist",
    "models": ["IC-STN-2(b)", "CNN(b)"],
    "seeds": [0, 1],
    "iterations": 20,
    "batch_size": 20,
    "lr_geometric": 0.001,
    "lr_classifier": 0.1,
    "eval_every": 10,
    "test_samples": 100,
    "test_warps": [3],
}


def write_grid(folder, name, **changes):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def write(folder, text_or_doc, name="g"):
    path = folder / f"{name}.yaml"
    path.write_text(text_or_doc if isinstance(text_or_doc, str) else yaml.safe_dump(text_or_doc))
    return path


def load(folder, name="g", budget=None, **changes):
    return grids.load_grid(write(folder, {**BASE, **changes}, name), budget)


class TestBudgetOnlyLowers:
    def test_a_smaller_grid_keeps_its_own_values(self, tmp_path):
        budget = {"iterations": 300, "seeds": 2, "test_samples": {"mnist": 2000}, "eval_every": 100}
        grid = load(tmp_path, budget=budget, seeds=[5], test_samples=300, iterations=50, eval_every=10)
        assert grid.seeds == (5,) and grid.test_samples == 300 and grid.iterations == 50 and grid.eval_every == 10

    def test_a_larger_grid_is_capped(self, tmp_path):
        grid = load(tmp_path, budget={"seeds": 2, "test_samples": 2000, "iterations": 300}, seeds=[4, 5, 6], iterations=1000)
        assert grid.seeds == (4, 5) and grid.test_samples == 2000 and grid.iterations == 300  # all -> 2000

    def test_the_learning_rate_scale_is_recorded(self, tmp_path):
        grid = load(tmp_path, budget={"lr_scale": {"mnist": 10}}, lr_classifier=0.01)
        assert grid.lr_scale == 10 and grid.lr_classifier == pytest.approx(0.1)
        assert {t.lr_scale for t in grids.expand(grid)} == {10.0}
        assert load(tmp_path, name="h").lr_scale == 1.0


def test_the_learning_curves_density_defaults_to_the_trainers_and_reaches_each_trial(tmp_path):
    from icstn.train import TrainConfig

    assert {t.train["curve_per_decade"] for t in grids.expand(load(tmp_path))} == {TrainConfig.curve_per_decade}
    assert {t.train["curve_per_decade"] for t in grids.expand(load(tmp_path, curve_per_decade=5))} == {5}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sigma_px": [float("nan")]}, r"key 'sigma_px.0': bad value nan; allowed: a finite number"),
        ({"lr_geometric": float("inf")}, r"key 'lr_geometric': bad value inf; allowed: a finite number"),
        ({"batch_size": 200000}, r"key 'batch_size': bad value 200000; allowed: an integer >= 1 and <= 4096, or a list of them"),
        ({"iterations": 10**13}, r"key 'iterations': bad value 10000000000000; allowed: <= 10000000"),
        ({"models": ["IC-STN-99999999(b)"]}, r"key 'models.0': unknown mnist model 'IC-STN-99999999\(b\)'.*1 <= N <= 32"),
        ({"test_warps": [100]}, r"key 'test_warps.0': bad value 100; allowed: <= 32"),
        ({"curve_per_decade": -1}, r"key 'curve_per_decade': bad value -1; allowed: >= 0"),
        ({"seeds": [1.5]}, r"key 'seeds.0': bad value 1.5; allowed: an integer >= 0 and <= 4294967295$"),
        ({"seeds": [0, 0]}, r"key 'seeds': bad value \[0, 0\]; allowed: each value once"),
        ({"sigma_px": [3.5, 3.5]}, r"key 'sigma_px': bad value \[3.5, 3.5\]; allowed: each value once"),
        ({"seeds": [2**32]}, r"key 'seeds.0': bad value 4294967296; allowed: <= 4294967295 \(icstn.rng draws from 32-bit seeds\)"),
        ({"lr_geometric": 0}, r"key 'lr_geometric': bad value 0; allowed: a number > 0, a list of them \(each once\), or null$"),
        (
            {"noise_warp": ["affine", "rigid"]},
            r"key 'noise_warp': bad value \['affine', 'rigid'\]; allowed: one of \['translation', 'similarity', 'affine', 'homography'\], "
            r"a list of them \(each once\), or null$",
        ),
        ({"paper_table": 3}, r"key 'paper_table': bad value 3; the paper's table of mnist is 2"),
        (
            {"experiment": "planar", "models": ["IC-STN-2"], "noise_warp": "homography"},
            r"key 'noise_warp': bad value 'homography' for models.0: IC-STN-2 predicts affine warps and cannot undo homography",
        ),
    ],
)
def test_mistake_named_at_load_time(tmp_path, changes, message):
    path = write(tmp_path, {**BASE, **changes})
    with pytest.raises(grids.GridError, match=f"{path}: {message}"):
        grids.load_grid(path)


def test_a_planar_grid_without_noise_warp_takes_its_experiments():
    """Once, every grid defaulted to homography noise, which no planar model can undo."""
    grid = grids.load_grid(write(Path(tempfile.mkdtemp()), {"experiment": "planar", "models": ["c-STN-1"]}))
    assert grid.noise_warp == ("affine",) and grid.lr_geometric == (3e-5,) and grid.init == ("he",)


def test_max_warps_in_the_schema_is_the_models():
    doc = yaml.safe_load(grids.SCHEMA_PATH.read_text())
    assert doc["properties"]["test_warps"]["items"]["maximum"] == models.MAX_WARPS


def test_a_key_given_twice(tmp_path):
    path = write(tmp_path, "experiment: mnist\nmodels: [CNN(b)]\nseeds: [0]\nmodels: [STN(b)]\n")
    with pytest.raises(grids.GridError, match=rf"{path}: not valid YAML: key 'models' is given twice \(lines 2 and 4\)"):
        grids.load_grid(path)


@pytest.mark.parametrize(
    "value, message",
    [
        ("&a [1, *a]", r"key 'title': a list or mapping inside itself once its YAML aliases \(\*name\) are expanded"),
        ("{a: &l [&k [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], *k, *k, *k, *k, *k, *k, *k, *k, *k], b: [*l, *l, *l, *l, *l, *l, *l, *l, *l, *l,"
         " *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l,"
         " *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l,"
         " *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l, *l,"
         " *l, *l, *l, *l, *l, *l, *l, *l, *l, *l]}",
         r"key 'title.b': 12,211 values once"),
    ],
    ids=["a list inside itself", "aliases beyond the bound"],
)
def test_aliases_are_bounded_before_validation(tmp_path, value, message, monkeypatch):
    monkeypatch.setattr(schema, "MAX_VALUES", 10_000)  # the same rule, a bound small enough to reach in a test
    path = write(tmp_path, f"experiment: mnist\nmodels: [CNN(b)]\ntitle: {value}\n")
    with pytest.raises(grids.GridError, match=rf"^{path}: {message}.*allowed: at most 10,000 values in a document"):
        grids.load_grid(path)


def test_a_bad_value_is_quoted_in_a_bounded_excerpt(tmp_path):
    path = write(tmp_path, {**BASE, "title": [list(range(100))] * 100})  # a schema error quotes the value
    with pytest.raises(grids.GridError) as caught:
        grids.load_grid(path)
    assert str(caught.value).startswith(f"{path}: key 'title': bad value [[0, 1, 2, 3, 4, 5, 6, 7, ") and len(str(caught.value)) < 500


def test_numbers_in_yaml_1_2_notation(tmp_path):
    """PyYAML reads 1e-3 as a string; the schema wants numbers there, so they are numbers."""
    text = (
        "experiment: mnist\nmodels: [CNN(b)]\nlr_geometric: 1e-4\nlr_classifier: 1E-2\nsigma_px: [3.5e0]\niterations: 2e3\n"
        "search: {space: {lr_geometric: {low: 1e-5, high: 1e-3}}}\n"
    )
    grid = grids.load_grid(write(tmp_path, text))
    assert grid.lr_geometric == (1e-4,) and grid.lr_classifier == 1e-2 and grid.sigma_px == (3.5,)
    assert grid.iterations == 2000 and isinstance(grid.iterations, int)
    assert grid.search.space["lr_geometric"] == {"low": 1e-5, "high": 1e-3, "log": True}


def test_profile_numbers_in_yaml_1_2_notation():
    doc = yaml.safe_load("budget: {lr_scale: {mnist: 1e1}, iterations: 3e2}\nray: {cpus_per_trial: 5e-1}\n")
    config_schema = schema.config_schema()
    fixed = schema.coerce_numbers(doc, config_schema)
    assert fixed == {"budget": {"lr_scale": {"mnist": 10.0}, "iterations": 300}, "ray": {"cpus_per_trial": 0.5}}
    assert json.dumps(schema.coerce_numbers({"profile": "1e3"}, config_schema)) == '{"profile": "1e3"}'  # a string stays one


@pytest.mark.parametrize("name", ["my grid", "a\nb", "..", "a.b"])
def test_a_grid_file_name_the_sweep_cannot_carry(tmp_path, name):
    path = write(tmp_path, BASE, name=name)
    with pytest.raises(grids.GridError, match="a grid's file name may hold letters, digits, '-' and '_' only") as err:
        grids.load_grid(path)
    assert str(err.value).startswith(f"{path}: ")


def test_a_grid_name_too_long_for_the_files_it_names(tmp_path):
    assert grids.load_grid(write(tmp_path, BASE, name="g" * grids.MAX_NAME)).name == "g" * grids.MAX_NAME
    path = write(tmp_path, BASE, name="g" * 250)
    with pytest.raises(grids.GridError, match=f"at most {grids.MAX_NAME} characters, this one has 250: it names the sweep's files"):
        grids.load_grid(path)


class TestGridSize:
    """A grid's size is said, and bounded, before it is planned: a seeds list of 10,000 once started
    thousands of trials without a word, after a minute spent expanding it."""

    HUGE = {"models": ["IC-STN-2(b)", "STN(b)", "CNN(b)"], "seeds": list(range(10_000)), "sigma_px": [2, 3.5], "lr_geometric": [1e-3, 1e-4]}

    @pytest.mark.parametrize("pack", [1, 3, 4, 128])
    def test_size_counts_what_expand_makes(self, tmp_path, pack):
        grid = load(tmp_path, models=["IC-STN-2(b)", "CNN(b)", "STN(b)"], seeds=[0, 1, 2, 3, 4], sigma_px=[1.0, 3.5],
                    lr_geometric=[1e-3, 1e-4], lr_geometric_by_family={"stn": 1e-5}, noise_warp=["affine", "homography"],
                    init=["code", "he"])  # fmt: skip
        trials = grids.expand(grid, pack)
        assert grids.size(grid, pack) == (len(trials), sum(len(t.members) for t in trials))

    def test_a_grid_beyond_the_cap_is_refused_before_it_is_expanded(self, tmp_path, monkeypatch):
        from pipeline import sweep

        def expand(*args, **kwargs):
            raise AssertionError("the grid was expanded before its size was checked")

        monkeypatch.setattr(grids, "expand", expand)
        path = write(tmp_path, {**BASE, **self.HUGE}, name="huge")
        # (2 rates x 2 models with a predictor + 1 CNN) x 20,000 members, 4 per trial
        with pytest.raises(grids.GridError) as caught:
            sweep.sweep(path, tmp_path / "r", tmp_path / "no-data", {"device": "cpu"}, "inline", track=False)
        assert str(caught.value) == (
            f"{path}: 25,000 trials (100,000 models x 20 iterations = 2,000,000 model-iterations) exceed the cap of 2,000 trials "
            "(config key 'max_trials'); shrink the grid (models, sigma_px, seeds, noise_warp, init, lr_geometric, batch_size), or lift "
            "the cap: "
            "snakemake --config max_trials=25000 (python -m pipeline.sweep --max-trials 25000)"
        )
        assert not (tmp_path / "r").exists()

    def test_the_cap_is_lifted_by_the_flag_it_names(self, tmp_path, capsys):
        from pipeline import sweep

        path = write(tmp_path, {**BASE, **self.HUGE}, name="huge")
        args = ["--grid", str(path), "--out", str(tmp_path / "r"), "--data", str(tmp_path / "x"), "--no-tracking", "--executor", "inline"]
        assert sweep.main([*args, "--max-trials", "24999"]) == 2
        assert "25,000 trials (100,000 models x 20 iterations" in capsys.readouterr().err
        # lifted, the grid passes its size check and goes on to the next: here, the missing data
        assert sweep.main([*args, "--max-trials", "25000"]) == 2
        assert "error: prepared dataset 'mnist' not found" in capsys.readouterr().err

    def test_a_cap_that_is_not_a_count(self, tmp_path):
        from pipeline import settings, sweep

        with pytest.raises(settings.SettingsError, match="config key 'max_trials': expected an integer >= 1, got 0"):
            sweep.sweep(write(tmp_path, BASE), tmp_path / "r", tmp_path / "no-data", {"max_trials": 0}, "inline", track=False)


class TestFigures:
    def test_a_figure_of_another_experiment(self, tmp_path):
        grid = load(tmp_path, experiment="planar", models=["IC-STN-2"], noise_warp="affine", figures=["fig8"])
        with pytest.raises(grids.GridError, match=r"g.yaml: key 'figures.0': bad value 'fig8': fig8 draws the mnist experiment"):
            figure_owners({"g": grid}, {"g": tmp_path / "g.yaml"})

    def test_a_figure_whose_models_the_grid_lacks(self, tmp_path):
        grid = load(tmp_path, models=["STN(a)"], figures=["fig8"])
        lacks = r"fig8 draws \['IC-STN-4\(a\)', 'STN\(a\)'\], and the grid's 'models' lacks \['IC-STN-4\(a\)'\]"
        with pytest.raises(grids.GridError, match=lacks):
            figure_owners({"g": grid}, {"g": tmp_path / "g.yaml"})

    def test_an_unknown_figure(self, tmp_path):
        grid = load(tmp_path, figures=["fig12"])
        with pytest.raises(grids.GridError, match=r"key 'figures.0': bad value 'fig12'; allowed: \['fig6', 'fig7', 'fig8'"):
            figure_owners({"g": grid}, {"g": tmp_path / "g.yaml"})

    def test_two_grids_claiming_one_figure(self, tmp_path):
        a = load(tmp_path, name="a", models=["IC-STN-4(a)", "STN(a)"], figures=["fig8"])
        b = load(tmp_path, name="b", models=["IC-STN-4(a)", "STN(a)", "CNN(a)"], figures=["fig9", "fig8"])
        with pytest.raises(grids.GridError, match=r"b.yaml: key 'figures': fig8 is already drawn by grid 'a'"):
            figure_owners({"a": a, "b": b}, {n: tmp_path / f"{n}.yaml" for n in "ab"})

    def test_a_yml_grid_is_found_and_one_name_twice_is_refused(self, tmp_path):
        for name in ("a.yaml", "b.yml", "notes.md", "a.yaml~"):
            (tmp_path / name).write_text("experiment: planar\n")
        assert grids.discover(tmp_path) == {"a": tmp_path / "a.yaml", "b": tmp_path / "b.yml"}
        (tmp_path / "a.yml").write_text("experiment: planar\n")
        with pytest.raises(grids.GridError, match=r"a.yml: a grid named 'a' is also .*a.yaml; grid names must differ"):
            grids.discover(tmp_path)

    def test_the_papers_grids_draw_every_figure_once(self):
        files = grids.discover(REPO / "config" / "grids", REPO / "config" / "ablations")
        assert sorted(figure_owners({n: grids.load_grid(p) for n, p in files.items()}, files)) == sorted(FIGURES)


def test_the_batch_size_is_a_sweep_axis(tmp_path):
    """A list of batch sizes gives each model a trial per size, labelled by it; one size stays one trial."""
    grid = load(tmp_path, models=["STN(b)"], seeds=[0], batch_size=[50, 100])
    trials = grids.expand(grid)
    assert sorted(t.train["batch_size"] for t in trials) == [50, 100] and len({t.key for t in trials}) == 2
    assert sorted(t.label for t in trials) == ["STN(b) batch_size=100 σ=3.5 seeds 0", "STN(b) batch_size=50 σ=3.5 seeds 0"]
    assert grids.size(grid) == (2, 2)
    assert [t.train["batch_size"] for t in grids.expand(load(tmp_path, name="h", models=["STN(b)"], seeds=[0], batch_size=64))] == [64]
    with pytest.raises(grids.GridError, match="key 'batch_size"):
        load(tmp_path, name="i", batch_size=[50, 0])


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"sigma_px": [-1]}, r"key 'sigma_px.0': bad value -1; allowed: >= 0"),
        ({"test_warps": [0]}, r"key 'test_warps.0': bad value 0; allowed: >= 1"),
        ({"models": []}, r"key 'models': bad value \[\]; allowed: a list of at least 1"),
        ({"models": ["ResNet"]}, r"key 'models.0': unknown mnist model 'ResNet'; allowed: \['CNN\(a\)'"),
        ({"learning_rate": 0.1}, r"unknown key 'learning_rate'; allowed keys: \[.*'lr_classifier'"),
        ({"noise_warp": "projective"}, r"key 'noise_warp': bad value 'projective'; allowed: one of \['translation'"),
        ({"experiment": "svhn"}, r"key 'experiment': bad value 'svhn'; allowed: \['planar', 'mnist', 'gtsrb'\]"),
    ],
)
def test_malformed_grid_names_file_and_key(tmp_path, changes, message):
    grid = write_grid(tmp_path, "bad", **changes)
    with pytest.raises(grids.GridError, match=f"{grid}: {message}"):
        grids.load_grid(grid)


def test_yaml_syntax_error_names_the_file(tmp_path):
    grid = tmp_path / "broken.yaml"
    grid.write_text("experiment: mnist\nmodels: [CNN(a)\n")
    with pytest.raises(grids.GridError, match=f"{grid}: not valid YAML"):
        grids.load_grid(grid)


def test_budget_caps_the_grid(tmp_path):
    grid = grids.load_grid(
        write_grid(tmp_path, "g", iterations=1000), {"iterations": {"mnist": 50}, "seeds": 1, "lr_scale": {"mnist": 10}}
    )
    assert grid.iterations == 50 and grid.seeds == (0,) and grid.lr_classifier == pytest.approx(1.0)
    trials = grids.expand(grid)
    assert len(trials) == 2 and all(len(t.members) == 1 for t in trials)
    assert len({t.key for t in trials}) == 2


def test_models_per_trial_follows_config_and_device(tmp_path):
    grid = grids.load_grid(write_grid(tmp_path, "g", models=["CNN(b)"], seeds=list(range(5)), sigma_px=[1.0, 2.0]))
    sizes = lambda pack: [len(t.members) for t in grids.expand(grid, pack)]  # noqa: E731
    assert sizes(settings.models_per_trial("auto", "cpu")) == [4, 3, 3]  # 10 members, the fewest balanced trials
    assert sizes(settings.models_per_trial("auto", "cuda:0")) == [10]
    assert sizes(settings.models_per_trial(3, "cuda")) == [3, 3, 2, 2]
    members = [m for t in grids.expand(grid, 4) for m in t.members]
    assert len(members) == 10 and len({(m.seed, m.sigma_px) for m in members}) == 10
    with pytest.raises(settings.SettingsError, match="config key 'pack': expected 'auto' or an integer >= 1, got 'many'"):
        settings.models_per_trial("many", "cpu")
