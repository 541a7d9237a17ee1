"""pipeline.files: a file is replaced whole, whatever the length of its name."""

import os

from pipeline import files


def test_a_file_whose_name_nearly_fills_the_filesystems_limit_is_written(tmp_path):
    path = tmp_path / ("g" * (files.NAME_MAX - len(".parquet")) + ".parquet")  # 255 characters: the longest name there is
    with files.atomic(path) as tmp:
        assert len(tmp.name.encode()) <= files.NAME_MAX and tmp.suffix == ".parquet"
        tmp.write_text("x")
    assert path.read_text() == "x" and os.listdir(tmp_path) == [path.name]  # no temporary file left


def test_the_temporary_name_of_a_non_ascii_name_stays_within_the_limit(tmp_path):
    path = tmp_path / ("σ" * 120 + ".json")  # 245 bytes
    files.write_text(path, "y")
    assert path.read_text() == "y" and os.listdir(tmp_path) == [path.name]
