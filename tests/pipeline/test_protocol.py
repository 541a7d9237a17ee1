"""The protocol's choices: every label in the paper's grids matches config/protocol.csv, and docs/protocol.md lists them."""

import csv
import re

import pytest
import yaml

from tests.conftest import REPO

ROWS = list(csv.DictReader((REPO / "config" / "protocol.csv").open()))


@pytest.mark.parametrize("row", [r for r in ROWS if r["grid"]], ids=lambda r: f"{r['grid']}.{r['key']}")
def test_the_grid_says_what_the_protocol_says(row):
    path = REPO / "config" / "grids" / f"{row['grid']}.yaml"
    assert yaml.safe_load(path.read_text())[row["key"]] == yaml.safe_load(row["value"])
    line = next(line for line in path.read_text().splitlines() if line.startswith(f"{row['key']}:"))
    assert f"[{row['label']}]" in line, f"{path.name}: {line!r} should carry [{row['label']}]"


def test_every_labelled_key_of_the_grids_is_in_the_protocol():
    listed = {(r["grid"], r["key"]): r["label"] for r in ROWS}
    for path in sorted((REPO / "config" / "grids").glob("*.yaml")):
        for line in path.read_text().splitlines():
            m = re.match(r"(\w+):.*#\s*\[(paper|code|ours)\]", line)
            if m and (path.stem, m.group(1)) in listed:
                assert listed[(path.stem, m.group(1))] == m.group(2), f"{path.name}: {line}"


def test_the_labels_are_honest():
    for r in ROWS:
        assert r["label"] in ("paper", "code", "ours")
        if r["label"] == "paper":
            assert r["paper"] not in ("silent", ""), f"{r['choice']} of {r['experiment']}: [paper] only where the paper states it"
        if r["label"] == "code":
            assert r["paper"] == "silent" or "same noise model" in r["paper"], "[code] only where the paper is silent"


def test_the_protocol_page_lists_every_choice():
    readme = (REPO / "docs" / "protocol.md").read_text()
    section = readme[readme.index("## Protocol notes") :]
    for r in ROWS:
        assert re.search(rf"\| {re.escape(r['experiment'])} \| {re.escape(r['choice'])} \|", section), (r["experiment"], r["choice"])


def _grid(tmp_path, **doc):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class TestEachKeyChangesWhatTrains:
    def test_init_the_weight_statistics(self):
        from icstn import models

        def stats(init):
            net = models.AlignNet(models.get_config("gtsrb", "STN", init), [0])
            geo, cls = net.predictors[0], net.classifier
            first, last = geo.weights[0], geo.weights[-1]
            return first.std().item(), cls.weights[0].std().item(), geo.biases[0].abs().sum().item(), last.abs().sum().item()

        geo_std, cls_std, geo_bias, last = stats("code")
        assert geo_std == pytest.approx(0.001, rel=0.1) and cls_std == pytest.approx(0.01, rel=0.1)
        assert geo_bias > 0 and last > 0  # the released traffic-sign code: normal biases, the last layer not zeroed
        _, _, geo_bias, last = stats("he")
        assert geo_bias == 0 and last == 0  # the identity warp first
        with pytest.raises(ValueError, match=r"unknown gtsrb init 'xavier'; allowed: \['code', 'he'\]"):
            models.get_config("gtsrb", "STN", "xavier")

    def test_noise_in_canonical_units(self, tmp_path):
        from icstn import data, models
        from icstn.train import TrainConfig, Trainer
        from pipeline import grids

        grid = grids.load_grid(_grid(tmp_path, experiment="gtsrb", models=["STN"], sigma_canonical=[0.25]))
        trial = grids.expand(grid)[0]
        assert set(trial.sigma_px) == {0.25 * 35 / 2} == {4.375}  # of the 36-px sample, align_corners=True
        t = Trainer(models.get_config("gtsrb", "STN"), TrainConfig(), data.synthetic("gtsrb", 10), trial.seeds[:1], trial.sigma_px[:1])
        assert t.sampler.sigma_units.tolist() == pytest.approx([0.25])
        with pytest.raises(grids.GridError, match="key 'sigma_canonical': give the noise levels in one unit"):
            grids.load_grid(_grid(tmp_path, experiment="gtsrb", models=["STN"], sigma_canonical=[0.25], sigma_px=[3.5]))

    def test_a_familys_own_geometric_rate(self, tmp_path):
        from pipeline import grids

        by_family = {"stn": 0.01}
        path = _grid(tmp_path, experiment="mnist", models=["STN(a)", "IC-STN-2(a)"], lr_geometric=1e-4, lr_geometric_by_family=by_family)
        rates = {t.model: t.train["lr_geometric"] for t in grids.expand(grids.load_grid(path))}
        assert rates == {"STN(a)": 0.01, "IC-STN-2(a)": 1e-4}
        scaled = {t.model: t.train["lr_geometric"] for t in grids.expand(grids.load_grid(path, {"lr_scale": 10}))}
        assert scaled == pytest.approx({"STN(a)": 0.1, "IC-STN-2(a)": 1e-3})

    def test_a_list_sweeps_its_values(self, tmp_path):
        from pipeline import grids

        path = _grid(tmp_path, experiment="gtsrb", models=["CNN", "STN"], init=["code", "he"], lr_geometric=[1e-5, 1e-3])
        trials = grids.expand(grids.load_grid(path))
        assert sorted((t.model, t.init, t.train["lr_geometric"]) for t in trials) == [
            ("CNN", "code", 1e-5), ("CNN", "he", 1e-5),  # a CNN has no geometric predictor: one rate
            ("STN", "code", 1e-5), ("STN", "code", 1e-3), ("STN", "he", 1e-5), ("STN", "he", 1e-3),
        ]  # fmt: skip
        assert len({t.key for t in trials}) == 6

