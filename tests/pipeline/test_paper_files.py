"""config/paper_results.csv and config/protocol.csv, edited by hand: every mistake is refused,
naming the file, the line and the rule, and the committed files pass."""

import pandas as pd
import pytest

from pipeline.report import paper, tables
from tests.conftest import PAPER_RESULTS, REPO

PROTOCOL = REPO / "config" / "protocol.csv"


def edited(tmp_path, source, change) -> str:
    """``source`` with ``change`` applied to its frame (every cell text), written to tmp_path."""
    df = pd.read_csv(source, dtype=str, keep_default_na=False)
    path = tmp_path / source.name
    change(df).to_csv(path, index=False)
    return path


def twice(df, value=None):
    copy = df.iloc[[1]].assign(**({"value": value} if value else {}))
    return pd.concat([df, copy], ignore_index=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (twice, "lines 3, 39: table 1, model 'IC-STN-2', setting '', sigma_px 2.5 is given 2 times; one row per table x model x"),
        (lambda df: twice(df, "9.9"), "lines 3, 39: table 1, model 'IC-STN-2'"),
        (lambda df: df.assign(table=["x", *df.table[1:]]), "line 2: column 'table': bad value 'x'; allowed: an integer >= 1"),
        (lambda df: df.assign(value=[*df.value[:-1], "n/a"]), "line 38: column 'value': bad value 'n/a'; allowed: a finite number"),
        (lambda df: df.assign(value=[*df.value[:-1], "inf"]), "line 38: column 'value': bad value 'inf'"),
        (lambda df: df.drop(columns="value"), "line 1: no column 'value'; the columns are: table, dataset, model,"),
        (lambda df: df.drop(columns="sigma_px").assign(sigma=1), "line 1: no column 'sigma_px', unknown column 'sigma'"),
        (lambda df: df.assign(dataset=["cifar", *df.dataset[1:]]), "line 2: column 'dataset': bad value 'cifar'; allowed: planar,"),
        (lambda df: df.assign(table=["2", *df.table[1:]]), "line 2: column 'table': bad value 2; the paper's table of planar is 1"),
        (lambda df: df.assign(model=["ResNet", *df.model[1:]]), "line 2: columns 'model' and 'setting': "),
        (lambda df: df.assign(capacity=[*df.capacity[:-1], "1.5"]), "line 38: column 'capacity': bad value '1.5'; allowed: an integer"),
    ],
)
def test_a_broken_paper_results_file_is_refused_naming_the_line_and_rule(tmp_path, change, message):
    path = edited(tmp_path, PAPER_RESULTS, change)
    with pytest.raises(paper.PaperFileError) as err:
        paper.read_paper_results(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda df: df.drop(columns="label"), "line 1: no column 'label'; the columns are: experiment, choice, grid, key,"),
        (lambda df: df.rename(columns={"paper": "stated"}), "line 1: no column 'paper', unknown column 'stated'"),
        (lambda df: df.assign(label=["mine", *df.label[1:]]), "line 2: column 'label': bad value 'mine'; allowed: paper, code, ours"),
        (lambda df: df.assign(experiment=["svhn", *df.experiment[1:]]), "line 2: column 'experiment': bad value 'svhn'"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), "lines 2, 37: experiment 'planar', choice 'noise levels' is given 2 times; one row"),
        (lambda df: df.assign(key=["", *df.key[1:]]), "line 2: columns 'grid' and 'key': give both"),
    ],
)
def test_a_broken_protocol_file_is_refused_naming_the_line_and_rule(tmp_path, change, message):
    path = edited(tmp_path, PROTOCOL, change)
    with pytest.raises(paper.PaperFileError) as err:
        paper.read_protocol(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_the_committed_files_pass():
    values = paper.read_paper_results(PAPER_RESULTS)
    assert len(values) == 37 and values.value.dtype == float and set(values.table) == {1, 2, 3}
    assert len(paper.read_protocol(PROTOCOL)) == 35


def test_the_report_step_says_it_in_one_line(tmp_path, capsys):
    path = edited(tmp_path, PAPER_RESULTS, lambda df: df.assign(value=[*df.value[:-1], "n/a"]))
    grid = REPO / "config" / "grids" / "table3.yaml"
    argv = ["--results", str(REPO / "reports" / "reference" / "table2" / "table2.parquet"), "--grid", str(grid), "--paper", str(path)]
    assert tables.main([*argv, "--out", str(tmp_path / "out"), "--reference", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: line 38: column 'value': bad value 'n/a'; allowed: a finite number >= 0\n"


def test_a_huge_paper_value_is_written_readably(tmp_path):
    from pipeline import grids
    from tests.pipeline.test_curves import table

    path = edited(tmp_path, PAPER_RESULTS, lambda df: df.assign(value=df.value.where(df.model != "CNN", "1e308")))
    grid = grids.load_grid(REPO / "config" / "grids" / "table2.yaml")
    built = tables.build(table("table2", ["CNN(a)"], [3.5]).assign(capacity=39079), grid, path)
    row = tables.formatted(built, "mnist").iloc[0]
    assert row["paper"] == "1e+308" and row["ours − paper (SE)"].startswith("-1e+308")
    assert max(len(cell) for cell in row) < 40
