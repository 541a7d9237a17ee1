"""pipeline.fetch / pipeline.prepare / icstn.data on the real mirror."""

import json
import shutil
import time
import zipfile

import numpy as np
import pytest

from icstn import data
from pipeline import fetch, prepare

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_prepared_with_official_counts(data_root):
    manifest = data.read_manifest(data_root / "processed", "mnist")
    assert manifest["counts"] == {"train": 60000, "test": 10000}
    assert [manifest["class_counts"]["train"][str(c)] for c in range(10)] == MNIST_TRAIN
    assert [manifest["class_counts"]["test"][str(c)] for c in range(10)] == MNIST_TEST
    ds = data.load(data_root / "processed", "mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and str(ds.train_images.dtype) == "torch.uint8"
    assert ds.test_labels.bincount().tolist() == MNIST_TEST


def test_gtsrb_prepared(gtsrb_root):
    ds = data.load(gtsrb_root / "processed", "gtsrb")
    assert ds.train_images.shape == (39209, 3, 50, 50)
    assert ds.test_images.shape == (12630, 3, 50, 50)
    assert ds.train_labels.unique().numel() == 43 and ds.test_labels.max().item() == 42
    assert ds.ref is not None  # the 36x36 sample is the central box
    assert ds.manifest["source_sizes"] == {"32x32": 51839}  # read from the files, not the CSVs
    batch = ds.images(ds.train_images[:8])
    assert batch.mean(dim=(-2, -1)).abs().max() < 1e-4  # standardised per image and channel


def test_planar_prepared(data_root):
    ds = data.load(data_root / "processed", "planar")
    assert ds.train_images.shape == (1, 1, 180, 240)
    assert ds.manifest["box"] == list(prepare.PLANAR_BOX)


def test_second_run_does_no_work(data_root, mirror, capsys):
    before = {p: p.stat().st_mtime_ns for p in (data_root / "processed" / "mnist").iterdir()}
    raw_before = {p: p.stat().st_mtime_ns for p in (data_root / "raw" / "mnist").iterdir()}
    fetch.fetch(["mnist"], data_root / "raw", str(mirror))
    prepare.prepare("mnist", data_root / "raw", data_root / "processed")
    assert "up to date" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (data_root / "processed" / "mnist").iterdir()} == before
    assert {p: p.stat().st_mtime_ns for p in (data_root / "raw" / "mnist").iterdir()} == raw_before


def corrupt_mirror(mirror, tmp_path, dataset, name, edit):
    if mirror is None:
        pytest.skip("needs a local dataset mirror (ICSTN_DATA_MIRROR) to damage a copy of")
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / dataset, copy / dataset)
    target = copy / dataset / name
    target.chmod(0o644)
    target.write_bytes(edit(bytearray(target.read_bytes())))
    return copy


def flip_one_byte(raw):
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


def test_corrupt_archive_is_rejected(mirror, tmp_path):
    bad = corrupt_mirror(mirror, tmp_path, "gtsrb", "GTSRB_Final_Test_GT.zip", flip_one_byte)
    raw = tmp_path / "raw"
    with pytest.raises(fetch.FetchError) as err:
        fetch.fetch(["gtsrb"], raw, str(bad))
    text = str(err.value)
    assert "gtsrb/GTSRB_Final_Training_Images.zip" not in text  # the good files passed
    assert "GTSRB_Final_Test_GT.zip" in text and "checksum mismatch" in text
    assert "expected sha256:d363bcd69bb737548b542aa9955c38d27950ab1fa03e632a1e5aa351167078cf" in text
    assert "got sha256:" in text
    assert not (raw / "gtsrb" / "GTSRB_Final_Test_GT.zip").exists()  # nothing that looks complete
    leftovers = [p.name for p in (raw / "gtsrb").iterdir() if "GT.zip" in p.name]
    assert leftovers == []


def test_no_mirror_no_network_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("ICSTN_DATA_MIRROR", raising=False)
    start = time.monotonic()
    with pytest.raises(fetch.FetchError, match="ICSTN_DATA_MIRROR") as err:
        fetch.fetch(["planar"], tmp_path / "raw")
    print(f"failed after {time.monotonic() - start:.2f} s")  # reported, not asserted
    assert "planar/cat.jpg" in str(err.value)
    assert not (tmp_path / "raw" / "planar" / "cat.jpg").exists()


def test_mirror_that_is_not_a_directory(tmp_path):
    with pytest.raises(fetch.FetchError, match="is not a directory"):
        fetch.fetch(["mnist"], tmp_path / "raw", str(tmp_path / "nowhere"))


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; allowed: \['mnist', 'gtsrb', 'planar'\]"):
        fetch.fetch(["svhn"], "unused")


def _gtsrb_raw_copy(gtsrb_root, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(gtsrb_root / "raw" / "gtsrb", raw / "gtsrb")
    return raw


def test_truncated_zip_is_named(gtsrb_root, tmp_path):
    raw = _gtsrb_raw_copy(gtsrb_root, tmp_path)
    target = raw / "gtsrb" / "GTSRB_Final_Test_Images.zip"
    target.write_bytes(target.read_bytes()[: 1 << 20])
    with pytest.raises(prepare.PrepareError, match="GTSRB_Final_Test_Images.zip is not a readable zip archive"):
        prepare.prepare("gtsrb", raw, tmp_path / "out", force=True)
    assert not (tmp_path / "out" / "gtsrb").exists()


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_archive_with_missing_member_is_named(gtsrb_root, tmp_path):
    raw = _gtsrb_raw_copy(gtsrb_root, tmp_path)
    target = raw / "gtsrb" / "GTSRB_Final_Test_GT.zip"
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("README.txt", "no labels here")
    with pytest.raises(prepare.PrepareError, match="lacks the member GT-final_test.csv"):
        prepare.prepare("gtsrb", raw, tmp_path / "out", force=True)
    assert not (tmp_path / "out" / "gtsrb").exists()


def test_missing_raw_file(tmp_path):
    with pytest.raises(prepare.PrepareError, match="raw file .*cat.jpg is missing; run `python -m pipeline.fetch planar`"):
        prepare.prepare("planar", tmp_path / "raw", tmp_path / "out")


def test_missing_prepared_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepared dataset 'mnist' not found"):
        data.load(tmp_path, "mnist")


def test_manifest_records_sources(data_root, mirror):
    manifest = json.loads((data_root / "processed" / "mnist" / "manifest.json").read_text())
    sums = fetch.mirror_checksums(str(mirror), "mnist")
    assert {k: "sha256:" + v for k, v in manifest["sources"].items()} == sums
    assert np.load(data_root / "processed" / "mnist" / "train_labels.npy").dtype == np.uint8
