"""Shared fixtures: the real dataset mirror, fetched and prepared once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO.parent / "shared" / "paper"


def mirror_path() -> Path:
    path = Path(os.environ.get("ICSTN_DATA_MIRROR") or REPO.parent / "shared" / "datasets").resolve()
    if not (path / "mnist" / "SHA256SUMS").is_file():
        pytest.fail(f"no dataset mirror at {path}: set ICSTN_DATA_MIRROR to the mirror directory")
    return path


@pytest.fixture(scope="session")
def mirror() -> Path:
    return mirror_path()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, mirror) -> Path:
    """data/ with raw and processed MNIST and planar (GTSRB on demand: it takes seconds)."""
    from pipeline import fetch, prepare

    root = tmp_path_factory.mktemp("data")
    fetch.fetch(["mnist", "planar"], root / "raw", str(mirror))
    for name in ("mnist", "planar"):
        prepare.prepare(name, root / "raw", root / "processed")
    return root


@pytest.fixture(scope="session")
def gtsrb_root(data_root, mirror) -> Path:
    from pipeline import fetch, prepare

    fetch.fetch(["gtsrb"], data_root / "raw", str(mirror))
    prepare.prepare("gtsrb", data_root / "raw", data_root / "processed")
    return data_root
