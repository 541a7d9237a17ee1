"""Files a reader never sees half of (a temporary name, then a rename), locks between processes,
and a full disk said in one line naming the path."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

#: Free space a sweep needs to start where it writes (its results, a local MLflow store): below it,
#: the first checkpoint would fail; a checkpoint or a finished trial's files take a few MB.
MIN_FREE = 64 * 2**20
NAME_MAX = 255  # bytes of one file name (ext4, XFS, tmpfs, NFS)
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write that failed, or would, for want of space. No retry mends it: the sweep stops, says
    so in one line naming the path, and a rerun after space is freed goes on from what was kept."""

    def __init__(self, path: str | Path, why: str = "could not be written"):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.why = why

    def __reduce__(self):
        return type(self), (self.filename, self.why)

    def __str__(self) -> str:
        return (
            f"no space left on device: {self.filename} {self.why}; free space there and run the same command again "
            "(finished trials are kept; unfinished ones resume from their last checkpoints)"
        )


def out_of_space(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain that says a disk (or quota) is full, or None: an OSError of
    ENOSPC or EDQUOT, or sqlite's 'database or disk is full' (an MLflow store), however wrapped."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in FULL) or "database or disk is full" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full(exc: BaseException, where: str | Path) -> DiskFull | None:
    """``exc`` as a DiskFull when a full disk is behind it (else None), naming the file its error
    names (a copy's destination is ``filename2``), else ``where``."""
    full = out_of_space(exc)
    if full is None or isinstance(full, DiskFull):
        return full
    return DiskFull(getattr(full, "filename2", None) or getattr(full, "filename", None) or where)


@contextmanager
def writing(path: str | Path, exact: bool = False) -> Iterator[None]:
    """A file write in the block that fails for want of space raises DiskFull (``disk_full``),
    naming ``path`` where the error names no file, or always when ``exact`` (a temporary name says
    less). An MLflow store's full database is left to its caller, who knows the store."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        if not isinstance(out_of_space(exc), OSError):
            raise
        raise (DiskFull(path) if exact else disk_full(exc, path)) from exc


class QuietDiskFull(logging.Filter):
    """Drops a library's log records of a full disk (Tune's uploads, MLflow's database errors, each
    a traceback): the sweep says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and out_of_space(record.exc_info[1]):
            return False
        return os.strerror(errno.ENOSPC) not in record.getMessage()  # Tune's syncer logs its traceback as text


def quiet_disk_full(*loggers: str) -> None:
    """Attach one QuietDiskFull to each of these loggers (once, however often it is called)."""
    for name in loggers:
        logging.getLogger(name).addFilter(_QUIET)


_QUIET = QuietDiskFull()


def check_space(path: str | Path, what: str, need: int | None = None) -> None:
    """DiskFull, before any compute, when the filesystem of ``path`` (``what`` is written there) has
    less than ``need`` bytes (MIN_FREE) free."""
    need = MIN_FREE if need is None else need
    path = Path(path).resolve()
    folder = next(p for p in (path, *path.parents) if p.exists())  # what is not made yet goes where its parent is
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DiskFull(path, f"({what}) is on a filesystem with {free / 2**20:.1f} MB free, less than the {need // 2**20} MB a sweep needs")


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    # a name of this writer's own (two processes may write one file), keeping the suffix (np.savez, to_parquet),
    # within NAME_MAX: the target's name is cut to fit, or the temporary name alone would be too long
    tag = f".{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    room = NAME_MAX - 1 - len(tag.encode())
    tmp = path.with_name(f".{path.name.encode()[:room].decode(errors='ignore')}{tag}")
    try:
        with writing(path, exact=True):
            path.parent.mkdir(parents=True, exist_ok=True)
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
