"""Where a number came from: git commit, package versions, device, data source."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "ray", "mlflow", "optuna", "pandas", "snakemake", "numpy")


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the user name and password of every URL in it replaced: ``https://***@host/...``."""
    return _USERINFO.sub(r"\1***@", str(text))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {counted(torch.get_num_threads(), 'thread')})"


def counted(n: int, noun: str) -> str:
    """'1 thread', '2 threads': a count and its noun, plural where it is not one."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def data_source(data_root: str | Path, dataset: str) -> dict:
    """What the prepared data came from: the files' checksums and where they were fetched."""
    manifest = json.loads((Path(data_root) / dataset / "manifest.json").read_text())
    return {"dataset": dataset, "fetched_from": manifest.get("fetched_from", "unknown"), "sources": manifest.get("sources", {})}
