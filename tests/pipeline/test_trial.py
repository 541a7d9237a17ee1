"""A trial's key: the settings that decide its result, stable across versions that add settings,
and the renaming of a store written under an earlier version's keys."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import grids, migrate, reference, settings, trial
from pipeline.schema import read_yaml
from pipeline.store import GridStore
from pipeline.trial import Member, Trial, TrialRecord

REPO = Path(__file__).resolve().parents[2]
PROFILES = {"paper": {}, **{p.stem: read_yaml(p) for p in sorted((REPO / "config").glob("*.yaml")) if p.stem != "config"}}
#: Every setting of a trial as this test knows it: a new one fails ``test_every_setting_is_declared``
#: until it is named here and, if it joins the key, in ``trial.ADDED`` with its earlier value.
KNOWN = {"grid", "experiment", "model", "members", "train", "test_samples", "test_warps", "lr_scale", "init", "validation_size", "shown"}
KNOWN_TRAIN = {"iterations", "batch_size", "lr_geometric", "lr_classifier", "noise_warp", "curve_per_decade", "eval_every"}


def every_trial() -> list[Trial]:
    """The trials of every grid of config/ under every profile."""
    found = []
    for doc in PROFILES.values():
        config = settings.resolve(doc | {"device": "cpu"})
        for path in [*sorted((REPO / "config" / "grids").glob("*.yaml")), *sorted((REPO / "config" / "ablations").glob("*.yaml"))]:
            found += grids.expand(grids.load_grid(path, config["budget"]), settings.models_per_trial(config["pack"], "cpu"))
    return found


@pytest.fixture(scope="module")
def trials() -> list[Trial]:
    return every_trial()


def test_every_setting_is_declared():
    """A setting added to the trial or its training settings is named here, and declared in ``ADDED``
    (or left out of the key) on purpose: otherwise every stored trial would silently be retrained."""
    fields = {f.name for f in dataclasses.fields(Trial)}
    assert fields - KNOWN - set(trial.ADDED) == set(), "declare the new field's earlier value in pipeline.trial.ADDED"
    assert set(trial.TRAIN_KEYS) - KNOWN_TRAIN - set(trial.ADDED) == set(), "declare the new setting in pipeline.trial.ADDED"


class TestAddedSetting:
    def test_a_field_added_at_its_earlier_value_keeps_every_key(self, trials, monkeypatch):
        before = [t.key for t in trials]
        assert len(set(before)) > 50  # every grid under every profile
        Wider = dataclasses.make_dataclass("Wider", [("warmup", int, dataclasses.field(default=0))], bases=(Trial,), frozen=True)
        monkeypatch.setitem(trial.ADDED, "warmup", 0)
        wider = [Wider(**{f.name: getattr(t, f.name) for f in dataclasses.fields(Trial)}) for t in trials]
        assert [t.key for t in wider] == before
        assert all("warmup" in t.to_dict() for t in wider)  # the setting is there, at its earlier value
        assert dataclasses.replace(wider[0], warmup=500).key != before[0]

    def test_a_training_setting_added_at_its_earlier_value_keeps_every_key(self, trials, monkeypatch):
        before = [t.key for t in trials]
        monkeypatch.setitem(trial.ADDED, "lr_decay", None)
        assert [t.with_overrides(lr_decay=None).key for t in trials] == before
        assert trials[0].with_overrides(lr_decay=0.5).key != before[0]

    def test_without_its_declaration_the_new_setting_changes_every_key(self, trials):
        """The positive control: ``ADDED`` is what keeps the keys."""
        assert trials[0].with_overrides(lr_decay=None).key != trials[0].key


class TestWhatDecides:
    def test_a_real_setting_changes_the_key(self, trials):
        t = trials[0]
        changed = [
            t.with_overrides(lr_geometric=t.train["lr_geometric"] * 2),
            t.with_overrides(iterations=t.train["iterations"] + 1),
            t.with_overrides(batch_size=t.train["batch_size"] + 1),
            dataclasses.replace(t, members=(Member(99, 1.0),)),
            dataclasses.replace(t, test_samples=7),
            dataclasses.replace(t, init="other"),
        ]
        assert len({t.key, *(c.key for c in changed)}) == len(changed) + 1

    def test_what_is_recorded_along_the_way_and_the_labels_do_not(self, trials):
        t = trials[0]
        same = [
            t.with_overrides(eval_every=t.train["eval_every"] + 7, curve_per_decade=5),
            dataclasses.replace(t, lr_scale=10.0),
            dataclasses.replace(t, shown=("noise_warp",)),
        ]
        assert {c.key for c in same} == {t.key}

    def test_a_record_of_an_earlier_version_gives_its_trial_the_current_key(self, trials):
        t = trials[0]
        old = t.to_dict()
        old["train"] = {k: v for k, v in old["train"].items() if k != "curve_per_decade"}
        assert Trial.from_dict(old).key == t.key


# --- a store written under earlier keys -------------------------------------------------------------
def _planar(tmp_path) -> tuple[grids.Grid, list[Trial]]:
    path = tmp_path / "g.yaml"
    path.write_text("experiment: planar\nmodels: ['c-STN-1', 'IC-STN-2']\nsigma_px: [2.5]\nseeds: [0, 1]\niterations: 50\n")
    grid = grids.load_grid(path)
    return grid, grids.expand(grid, 4)


def _record(t: Trial, key: str) -> dict:
    curve, test_curve = [[1, 2.0]], [[50, {"test_error": 1.0}]]
    members = tuple(trial.MemberResult(m.seed, m.sigma_px, {"test_error": 1.0}, {}, curve, test_curve) for m in t.members)
    return TrialRecord(t, "test", 50, 300, "cpu", {}, 1.0, None, members, {}, {}).to_dict() | {"key": key}


def _old_store(tmp_path) -> tuple[GridStore, list[Trial], dict[str, str]]:
    """A store as the version before identities wrote it: a finished trial (record), an unfinished one
    (a checkpoint only) continued from it, its last sweep's summary and its results table."""
    grid, trials = _planar(tmp_path)
    store = GridStore(tmp_path / "results", grid.name)
    old = {t.key: migrate.legacy_keys(t)[0] for t in trials}
    done, running = trials
    store.folder(old[done.key]).mkdir(parents=True)
    (store.folder(old[done.key]) / "record.json").write_text(json.dumps(_record(done, old[done.key])))
    store.folder(old[running.key]).mkdir(parents=True)
    store.checkpoint(old[running.key]).write_bytes(b"state")
    (store.folder(old[running.key]) / "continued.json").write_text(json.dumps({"trial": old[done.key], "step": 20}))
    store.summary.write_text(json.dumps({"keys": list(old.values()), "finished": False}))
    pd.DataFrame({"trial_key": [old[done.key]] * 2, "value": [1.0, 2.0]}).to_parquet(store.table)
    return store, trials, old


class TestRekey:
    def test_the_committed_reference_is_keyed_as_the_current_code_keys_its_trials(self):
        root = REPO / "reports" / "reference"
        store = GridStore(root / "table2", "table2")
        current = {t.key for t in reference.trials_of("table2", root, REPO / "config")}
        assert store.trial_keys() and set(store.trial_keys()) <= current
        assert set(reference.facts_of("table2", root)["trials"]) == set(store.trial_keys())  # its progress line's keys
        assert set(pd.read_parquet(store.table).trial_key) == set(store.trial_keys())

    def test_a_reference_of_two_versions_ago_is_renamed_to_the_current_keys(self, tmp_path):
        """The committed reference, laid out again under the keys it was written with (every field but
        the curves' setting), is found again by ``migrate.reference``."""
        root = tmp_path / "reference"
        shutil.copytree(REPO / "reports" / "reference" / "table2", root / "table2")
        store = GridStore(root / "table2", "table2")
        store.rekey_log.unlink()
        trials = {t.key: t for t in reference.trials_of("table2", root, REPO / "config")}
        earlier = {key: migrate.legacy_keys(trials[key])[1] for key in store.trial_keys()}
        for key, old in earlier.items():
            store.folder(key).rename(store.folder(old))
        table = pd.read_parquet(store.table)
        table.assign(trial_key=table.trial_key.map(earlier)).to_parquet(store.table)
        facts = reference.facts_of("table2", root)
        facts["trials"] = {earlier[k]: v for k, v in facts["trials"].items()}
        (root / "table2" / reference.PROVENANCE).write_text(json.dumps(facts))
        assert migrate.reference("table2", root, REPO / "config") == {old: key for key, old in earlier.items()}
        assert set(store.trial_keys()) == set(earlier)
        assert set(reference.facts_of("table2", root)["trials"]) == set(earlier)
        assert set(pd.read_parquet(store.table).trial_key) == set(earlier)

    def test_an_earlier_versions_store_is_renamed_everywhere_it_names_a_trial(self, tmp_path):
        store, trials, old = _old_store(tmp_path)
        done, running = trials
        assert migrate.upgrade(store, trials) == {v: k for k, v in old.items()}
        assert sorted(store.trial_keys()) == sorted(t.key for t in trials)
        assert store.record(done.key).trial.key == done.key
        assert json.loads((store.folder(done.key) / "record.json").read_text())["key"] == done.key
        assert store.checkpoint(running.key).read_bytes() == b"state"
        assert store.continued(running.key) == {"trial": done.key, "step": 20}
        assert json.loads(store.summary.read_text())["keys"] == [t.key for t in trials]
        assert set(pd.read_parquet(store.table).trial_key) == {done.key}
        assert store.aliases()[done.key] == [old[done.key]]
        assert migrate.upgrade(store, trials) == {}  # once is enough

    def test_an_interrupted_rename_completes_on_the_next_call(self, tmp_path):
        store, trials, old = _old_store(tmp_path)
        done = trials[0]
        renames = migrate.plan(store, trials)
        store.folder(old[done.key]).rename(store.folder(done.key))  # as if it stopped after the first folder
        store.rekey_log.write_text(json.dumps({"migrations": [{"date": "d", "keys": renames, "done": False}]}))
        migrate.upgrade(store, trials)
        assert sorted(store.trial_keys()) == sorted(t.key for t in trials)
        assert [m["done"] for m in store.rekeyed()] == [True]
        assert set(pd.read_parquet(store.table).trial_key) == {done.key}

    def test_a_folder_no_trial_accounts_for_is_refused_naming_it(self, tmp_path):
        store, trials, old = _old_store(tmp_path)
        stray = store.folder("IC-STN-2-0123456789")
        stray.mkdir()
        with pytest.raises(migrate.Unmatched, match="IC-STN-2-0123456789.*no record or checkpoint"):
            migrate.plan(store, trials)
        assert sorted(store.trial_keys()) == sorted([*old.values(), stray.name])  # nothing renamed
        assert stray.name not in migrate.upgrade(store, trials)  # a sweep leaves it alone

    def test_the_command_says_first_and_renames_with_apply(self, tmp_path, capsys):
        store, trials, old = _old_store(tmp_path)
        grid_file = tmp_path / "g.yaml"
        args = ["--grid", str(grid_file), "--results", str(tmp_path / "results"), "--settings", '{"device": "cpu"}']
        assert migrate.main(args) == 0
        assert sorted(store.trial_keys()) == sorted(old.values())  # a dry run changes nothing
        assert "2 of 2 trials to rename" in capsys.readouterr().err
        assert migrate.main([*args, "--apply"]) == 0
        assert sorted(store.trial_keys()) == sorted(t.key for t in trials)
