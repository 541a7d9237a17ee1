"""Files a reader never sees half of (a temporary name, then a rename), and locks between processes."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this writer's own (two processes may write one file), keeping the suffix: np.savez, to_parquet
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=1))


def try_lock(path: str | Path) -> IO | None:
    """``path`` opened and exclusively locked, or None when another process holds it.

    The lock lasts while the file stays open, and the OS drops it when its process dies, however it
    dies: it tells a live holder from a dead one, which a lock *file* cannot.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def locked(path: str | Path, on_wait=None) -> Iterator[None]:
    """Hold the lock of ``path`` for the block, waiting (after calling ``on_wait``) while another process holds it."""
    handle = try_lock(path)
    if handle is None:
        if on_wait is not None:
            on_wait()
        handle = open(path, "a")  # noqa: SIM115
        fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        handle.close()
