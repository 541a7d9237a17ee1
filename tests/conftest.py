"""Shared fixtures: the real datasets, fetched and prepared once per test session.

The paper's numbers come from the project's own ``config/paper_results.csv``. The datasets come
from the mirror named by ``ICSTN_DATA_MIRROR`` when it is set, and from the official sources
otherwise; where neither answers, the tests that need data are skipped (saying so) and every
other test still runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER_RESULTS = REPO / "config" / "paper_results.csv"


def mirror_path() -> Path | None:
    """The dataset mirror of ``ICSTN_DATA_MIRROR``, or None (the official sources)."""
    value = os.environ.get("ICSTN_DATA_MIRROR")
    if not value:
        return None
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.fail(f"ICSTN_DATA_MIRROR={value} is not a directory; point it at the dataset mirror, or unset it")
    return path


@pytest.fixture(scope="session")
def mirror() -> Path | None:
    return mirror_path()


def _fetch(names: list[str], raw: Path, mirror: Path | None) -> None:
    """Fetch or skip: without a mirror and without the network, data tests cannot run here."""
    from pipeline import fetch

    try:
        fetch.fetch(names, raw, str(mirror) if mirror else None)
    except fetch.FetchError as exc:
        where = f"the mirror {mirror}" if mirror else "the official sources (ICSTN_DATA_MIRROR is not set)"
        pytest.skip(f"datasets {names} unavailable from {where}; set ICSTN_DATA_MIRROR to a dataset mirror ({exc})")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, mirror) -> Path:
    """data/ with raw and processed MNIST and planar (GTSRB on demand: it takes seconds)."""
    from pipeline import prepare

    root = tmp_path_factory.mktemp("data")
    _fetch(["mnist", "planar"], root / "raw", mirror)
    for name in ("mnist", "planar"):
        prepare.prepare(name, root / "raw", root / "processed")
    return root


@pytest.fixture(scope="session")
def gtsrb_root(data_root, mirror) -> Path:
    from pipeline import prepare

    _fetch(["gtsrb"], data_root / "raw", mirror)
    prepare.prepare("gtsrb", data_root / "raw", data_root / "processed")
    return data_root


def data_env(mirror: Path | None) -> dict[str, str]:
    """The environment of a subprocess that fetches: the same mirror as the tests, or none."""
    env = {k: v for k, v in os.environ.items() if k != "ICSTN_DATA_MIRROR"}
    return env | ({"ICSTN_DATA_MIRROR": str(mirror)} if mirror else {})


def fetched_from(mirror: Path | None) -> str:
    """What ``data_fetched_from`` holds: a local mirror's layout (never a machine's path), or an official HTTPS source."""
    return "mirror:" if mirror else "https://"
