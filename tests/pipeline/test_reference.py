"""pipeline.reference: a reference grown by runs that each stop at a limit, packed compactly, laid out
for the reports or refused whole, and restored so that the next run continues it exactly."""

import json
import re
import tarfile

import numpy as np
import pandas as pd
import pytest

from pipeline import reference, sweep
from pipeline.stop import Limit
from tests.conftest import REPO
from tests.workflow import test_stop as stops

COMMITTED = REPO / "reports" / "reference" / "table2"
TIMING = ["seconds", "device", "git_commit"]  # how long a run took, and where: the rest must be bit for bit
HERE = reference.kind_here()  # a run here packs a reference of this kind (its folder: grown/ or grown-cpu/)
SHOWN = "reference" if HERE == "GPU" else "reference (CPU)"  # how a progress line names a reference of this machine


def write_grid(folder, **changes):
    return stops.write_grid(folder, "grown", **changes)


def table(path) -> pd.DataFrame:
    return stops.table(path, TIMING)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    """The grid trained in one go: the table a reference grown by interrupted runs must give."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return sweep.sweep(write_grid(tmp), tmp / "res", data_root / "processed", {}, executor="inline", track=False)


def grow(tmp_path, data_root, root, n, grid, limit=None):
    """One run as benchmarks/reference_run.sh makes it: restore, sweep to the limit, pack, unpack."""
    results = tmp_path / f"run{n}"
    reference.restore("grown", results, root, HERE)
    try:
        sweep.sweep(grid, results, data_root / "processed", {}, executor="inline", track=False, limit=limit)
    except sweep.SweepStopped:
        pass
    archive = reference.pack(results, "grown", tmp_path / f"grown{n}.tar.gz", seconds=1.5)
    return reference.unpack(archive, root), archive


@pytest.mark.slow  # three and two runs of a tiny grid
def test_a_reference_grown_by_stopped_runs_gives_the_uninterrupted_table(tmp_path, data_root, uninterrupted):
    root, grid = tmp_path / "reference", write_grid(tmp_path / "grid")
    folder, archive = grow(tmp_path, data_root, root, 1, grid, Limit(step=7))
    facts = reference.facts_of("grown", root, HERE)
    assert reference.progress(facts) == f"grown {SHOWN}: 0 of 20 iterations (its 2 trials at 0-7)"
    assert reference.load("grown", root, HERE) is None  # no trial finished: no table, no column
    with tarfile.open(archive) as tar:  # compact: the state a run continues, nothing a run can rebuild
        names = tar.getnames()
    assert [n for n in names if n.endswith(".pt")] == [n for n in names if n.endswith("/checkpoint.pt")]
    assert len(names) == 4 and sum(n.endswith("/segments.json") for n in names) == 1  # where the checkpoint's steps ran
    folder, _ = grow(tmp_path, data_root, root, 2, grid, Limit(step=13))
    assert reference.progress(reference.facts_of("grown", root, HERE)) == f"grown {SHOWN}: 0 of 20 iterations (its 2 trials at 0-13)"
    folder, _ = grow(tmp_path, data_root, root, 3, grid)
    pd.testing.assert_frame_equal(table(folder / "grown.parquet"), table(uninterrupted), check_exact=True)
    facts = reference.facts_of("grown", root, HERE)
    assert reference.progress(facts, "Grown") == f"Grown {SHOWN}: 20 of 20 iterations, all 2 trials"
    assert [r["steps"] for r in facts["runs"]] == [{"min": 0, "max": 7}, {"min": 0, "max": 13}, {"min": 20, "max": 20}]
    assert [r["finished"] for r in facts["runs"]] == [0, 0, 2] and all(r["seconds"] == 1.5 and "tf32" in r for r in facts["runs"])
    assert "3 runs (4 s)" in reference.note(facts)
    assert not list(folder.rglob("checkpoint.pt")) and len(list(folder.rglob("final.pt"))) == 2  # what a longer budget continues


@pytest.mark.slow  # three and two runs of a tiny grid
def test_a_longer_budget_continues_the_references_finished_trials(tmp_path, data_root, uninterrupted):
    root = tmp_path / "reference"
    grow(tmp_path, data_root, root, 1, write_grid(tmp_path / "short", iterations=10))
    assert reference.progress(reference.facts_of("grown", root, HERE)) == f"grown {SHOWN}: 10 of 10 iterations, all 2 trials"
    folder, _ = grow(tmp_path, data_root, root, 2, write_grid(tmp_path / "long"))
    pd.testing.assert_frame_equal(table(folder / "grown.parquet"), table(uninterrupted), check_exact=True)
    records = [json.loads(p.read_text()) for p in folder.rglob("record.json")]
    assert sorted(r["iterations"] for r in records) == [20, 20] and all(r["continued_from"]["step"] == 10 for r in records)


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_a_reference_over_its_cap_is_refused(tmp_path, data_root, uninterrupted, monkeypatch):
    monkeypatch.setattr(reference.keep, "CAP", 2**16)
    out = tmp_path / "grown.tar.gz"
    with pytest.raises(ValueError, match=r"^the reference of grown is \d+\.\d MiB, over its cap of 0\.0625 MiB: train fewer seeds"):
        reference.pack(uninterrupted.parent, "grown", out)
    assert not out.exists()


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_a_finished_reference_keeps_what_its_reports_read_within_its_bound(tmp_path, uninterrupted):
    """Finished at its goal, a trial keeps no final state; its arrays only where a figure reads them:
    each model's lowest seed. The archive's files stay within the bound prepare computes."""
    from pipeline import grids

    folder = reference.unpack(reference.pack(uninterrupted.parent, "grown", tmp_path / "grown.tar.gz", goal=20), tmp_path / "ref")
    assert not list(folder.rglob("*.pt"))  # nothing to continue: every trial reached its goal
    df, _ = reference.load("grown", tmp_path / "ref", HERE)
    for model in df.model.unique():
        lowest = df[(df.model == model) & (df.seed == df.seed.min())].iloc[0]
        store = reference.GridStore(folder, "grown")
        assert set(store.arrays(lowest.trial_key, int(lowest.member))) == {"alignment", "mean", "var"}  # what figures.arrays reads
        with np.load(store.folder(lowest.trial_key) / "arrays.npz") as z:
            assert z["alignment"].shape[0] == int(lowest.member) + 1  # the members after it are not kept
    grid = grids.load_grid(write_grid(tmp_path / "grid"))
    bound = reference.keep.estimate("grown", grid.experiment, grids.expand(grid))
    kept = reference.size(folder)
    assert kept <= bound.total, (kept, bound)
    # unfinished, it keeps the state it continues from; finished short of its goal, the final state too
    again = reference.unpack(reference.pack(uninterrupted.parent, "grown", tmp_path / "again.tar.gz", goal=40), tmp_path / "again")
    assert len(list(again.rglob("final.pt"))) == 2 and reference.size(again) <= bound.total


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_prepare_bounds_each_tables_reference_within_its_cap_at_three_seeds(tmp_path, device):
    for grid in ("table1", "table2", "table3"):
        assert reference.prepare(grid, tmp_path / grid, 3, {"device": device}, REPO / "config")
        plan = json.loads((tmp_path / grid / "plan.json").read_text())
        assert 0 < plan["bound_bytes"] <= reference.keep.cap(grid) and plan["goal"] in (50_000, 200_000)


def test_prepare_refuses_a_reference_over_its_cap_naming_the_seeds_that_fit(tmp_path):
    with pytest.raises(ValueError, match=r"^table3 reference at 5 seeds: at most 2\d\.\d\d MiB .* of its cap of 24 MiB: over its cap; "
                       r"at most 3 seeds fit \(SEEDS=3\)$"):  # fmt: skip
        reference.prepare("table3", tmp_path, 5, {"device": "cuda"}, REPO / "config")
    assert not (tmp_path / "plan.json").exists()
    assert reference.main(["prepare", "--grid", "table9", "--work", str(tmp_path), "--seeds", "3"]) == 2  # no such grid: named


def test_restore_never_mixes_a_reference_into_a_run(tmp_path):
    results = tmp_path / "results"
    (results / "table2").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"^{results} already holds table2: restore the reference into an empty results folder"):
        reference.restore("table2", results, COMMITTED.parent)
    assert reference.restore("table3", tmp_path / "fresh", COMMITTED.parent) is None  # no reference: a run starts afresh
    assert not (tmp_path / "fresh").exists()


def test_the_committed_table2_reference_says_how_far_it_has_got():
    facts = reference.facts_of("table2", COMMITTED.parent)
    line = reference.progress(facts, "Table 2")
    assert line == "Table 2 reference: 6,400 of 200,000 iterations; no checkpoints: its next run starts afresh"
    assert len(facts["runs"]) == 1 and facts["runs"][0]["tf32"] is True and facts["runs"][0]["device"] == "NVIDIA H200"
    df, _ = reference.load("table2", COMMITTED.parent)
    assert set(df.trial_key) == set(facts["trials"]) and set(df.iterations) == {6400}
    assert reference.column(df) == "Its column: the 12 finished trials, at 6,400 iterations"


@pytest.fixture
def archive(tmp_path):
    """The committed Table 2 reference, packed as a GPU machine's run would be."""
    path = tmp_path / "table2.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(COMMITTED, arcname="table2")
    return path


@pytest.fixture
def earlier(tmp_path):
    """An earlier reference of table2 already in place: what a bad archive must leave alone."""
    into = tmp_path / "reference"
    (into / "table2").mkdir(parents=True)
    (into / "table2" / "provenance.json").write_text('{"earlier": true}')
    return into


def test_an_archive_replaces_the_earlier_reference_whole(archive, earlier):
    folder = reference.unpack(archive, earlier)
    assert folder == earlier / "table2" and (folder / "provenance.json").read_bytes() == (COMMITTED / "provenance.json").read_bytes()
    df, facts = reference.load("table2", earlier)
    assert len(df) > 0 and facts["grid"] == "table2"
    assert [p.name for p in earlier.iterdir()] == ["table2"]  # no temporary folder left beside it


@pytest.mark.parametrize("damage", ["cut", "garbage", "no provenance", "missing"])
def test_a_bad_archive_is_named_and_changes_nothing(archive, earlier, damage):
    if damage == "cut":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a copy that stopped halfway
    elif damage == "garbage":
        archive.write_bytes(b"not an archive at all")
    elif damage == "no provenance":
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(COMMITTED / "table2.parquet", arcname="table2/table2.parquet")
    else:
        archive.unlink()
    with pytest.raises(ValueError, match=f"^{archive}: not a (readable )?reference archive"):
        reference.unpack(archive, earlier)
    assert [p.name for p in earlier.iterdir()] == ["table2"]
    assert (earlier / "table2" / "provenance.json").read_text() == '{"earlier": true}'  # the earlier one stands


def test_the_command_says_it_in_one_line(archive, earlier, capsys):
    archive.write_bytes(b"\x1f\x8b" + b"\0" * 40)
    assert reference.main(["unpack", str(archive), "--into", str(earlier)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {archive}: not a readable reference archive (") and err.count("\n") == 1


def test_the_committed_reference_names_no_machines_paths():
    """A reference travels between machines: its provenance says where data came from by layout, not by path."""
    for table in REPO.glob("reports/reference/*/*.parquet"):
        df = pd.read_parquet(table)
        for column in df.select_dtypes(include=["object", "string"]).columns:
            paths = df[column].astype(str).str.contains(r"(?:^|[;,\s])/\w", regex=True)
            assert not paths.any(), f"{table.name}: column {column!r} holds a path: {df[column][paths].iloc[0][:80]}"
    for facts in [*REPO.glob("reports/reference/*/provenance.json"), *REPO.glob("reports/reference/*/*/*.json"),
                  *REPO.glob("reports/reference/*/*/trials/*/*.json")]:  # fmt: skip
        assert not re.search(r"\"/\w", facts.read_text()), facts


def test_a_table_says_how_far_its_reference_has_got_before_any_trial_finishes(tmp_path):
    """Only finished trials have rows: until one finishes there is no reference column, and the caption says why."""
    from pipeline.report import tables

    facts = reference.facts_of("table2", COMMITTED.parent)
    steps = dict(zip(facts["trials"], [41000] * 11 + [80000]))
    facts |= {"trials": {k: {"step": s, "iterations": 200000, "finished": False, "continuable": True} for k, s in steps.items()}}
    (tmp_path / "table2").mkdir()
    (tmp_path / "table2" / "provenance.json").write_text(json.dumps(facts))
    md = tables.render(COMMITTED / "table2.parquet", REPO / "config" / "grids" / "table2.yaml", tmp_path / "out", None, tmp_path)[0]
    text = md.read_text()
    assert "reference (GPU): reference profile, 41,000 of 200,000 iterations (its 12 trials at 41,000-80,000); 1 run" in text
    assert "| reference (GPU)" not in text
    facts["trials"][next(iter(steps))] |= {"step": 200000, "finished": True}
    assert reference.progress(facts, "Table 2") == (
        "Table 2 reference: 41,000 of 200,000 iterations; 1 of 12 trials finished, the others at 41,000-80,000"
    )


def test_a_cpu_reference_is_shown_beside_the_gpu_one(tmp_path):
    """Two references of one grid, a GPU machine's (<grid>/) and a CPU's (<grid>-cpu/): each has its
    column, its note and its marks on the learning curves, each labelled with its kind."""
    import shutil

    from pipeline import grids
    from pipeline.report import curves, tables

    shutil.copytree(COMMITTED, tmp_path / "table2")
    cpu = shutil.copytree(COMMITTED, reference.folder("table2", tmp_path, "CPU"))
    facts = json.loads((cpu / "provenance.json").read_text())
    facts["kind"], facts["runs"][0]["device"], facts["runs"][0]["nvidia-smi"] = "CPU", "cpu (x86_64, 1 threads)", "unavailable"
    (cpu / "provenance.json").write_text(json.dumps(facts | {"runs": [facts["runs"][0] | {"processes": 2}]}))
    assert list(reference.loaded("table2", tmp_path)) == ["GPU", "CPU"]
    md = tables.render(COMMITTED / "table2.parquet", REPO / "config" / "grids" / "table2.yaml", tmp_path / "out", None, tmp_path)[0]
    text = md.read_text()
    assert re.search(r"\| reference \(GPU\) +\| reference \(CPU\) +\|", text)
    assert "reference (GPU): reference profile" in text and "reference (CPU): reference profile" in text
    assert r"cpu (x86\_64, 1 threads) x 2 processes" in text  # Markdown-escaped
    assert reference.progress(facts, "Table 2").startswith("Table 2 reference (CPU): 6,400 of 200,000 iterations")
    grid = grids.load_grid(REPO / "config" / "grids" / "table2.yaml")
    _, note = curves.draw([(grid, pd.read_parquet(COMMITTED / "table2.parquet"))], reference_root=tmp_path)
    assert "reference (GPU): reference profile" in note and "reference (CPU): reference profile" in note


def test_the_reference_only_grid_is_table2s_cheap_rows():
    """config/references/table2.yaml: Table 2's trials of its five (b) models and c-STN-4(a), at the paper's
    budget; not a grid of the workflow (config/grids), so `make reproduce` never trains it."""
    from pipeline import grids

    cheap, table2 = (grids.load_grid(REPO / "config" / folder / "table2.yaml") for folder in ("references", "grids"))
    assert set(cheap.models) == {"c-STN-4(a)", *(m for m in table2.models if m.endswith("(b)"))} and len(cheap.models) == 6
    assert cheap.iterations == 200_000 and len(cheap.seeds) == 3
    assert {t.key for t in grids.expand(cheap)} <= {t.key for t in grids.expand(table2)}  # its results are Table 2's
    assert reference.grid_file(REPO / "config" / "references" / "table2.yaml").stem == "table2"


def test_a_reference_keeps_the_arrays_of_the_experiments_whose_figures_draw_trained_models():
    from pipeline.report.figures import FIGURES

    assert reference.keep.LEARNT == {spec.experiment for spec in FIGURES.values() if spec.learnt}


def test_the_size_bound_counts_what_the_runner_writes():
    from pipeline import runner

    assert reference.keep.ALIGNMENT_SAMPLES == runner.ALIGNMENT_SAMPLES
    for iterations in (1, 40, 99, 100, 199, 399, 50_000, 200_000, 10**6):
        assert iterations // runner.log_every(iterations) <= reference.keep.LOSS_POINTS
