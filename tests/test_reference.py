"""pipeline.reference unpack: a GPU machine's archive laid out for the reports, or refused whole."""

import tarfile

import pytest

from pipeline import reference
from tests.conftest import REPO

COMMITTED = REPO / "reports" / "reference" / "table2"


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
    import re

    import pandas as pd

    for table in REPO.glob("reports/reference/*/*.parquet"):
        df = pd.read_parquet(table)
        for column in df.select_dtypes(include=["object", "string"]).columns:
            paths = df[column].astype(str).str.contains(r"(?:^|[;,\s])/\w", regex=True)
            assert not paths.any(), f"{table.name}: column {column!r} holds a path: {df[column][paths].iloc[0][:80]}"
    for facts in REPO.glob("reports/reference/*/provenance.json"):
        assert not re.search(r"\"/\w", facts.read_text()), facts
