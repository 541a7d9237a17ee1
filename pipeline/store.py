"""Where a grid's results live on disk; the only code that spells those paths.

    <results>/<grid>.parquet                the tidy results table (pipeline.results)
    <results>/<grid>/sweep.json             the last sweep's summary: whether every trial finished, and their keys
    <results>/<grid>/store.json             the store's own id (its MLflow runs carry it)
    <results>/<grid>/rekeyed.json           trials renamed from an earlier version's keys (``rekey``)
    <results>/<grid>/best.json              a search's best setting
    <results>/<grid>/ray/                   Ray Tune's own records
    <results>/<grid>/cache/<digest>.json    values trials share (an alignment task's linear baseline)
    <results>/<grid>/trials/<key>/
        record.json     written last, atomically: its presence means the trial is done
        checkpoint.pt   the unfinished trial's last state (gone once it is done)
        final.pt        the finished trial's last state: what a longer budget continues from
        continued.json  where the trial started: a shorter trial's key and its final step (if it did)
        segments.json   where it trained, run by run: each run's device, first and last step, seconds
        arrays.npz      alignment samples, class means and variances of every member (the figures')
        member<k>/      member k's weights, alignment PNG and arrays (its MLflow artifacts)
        .lock           held while a process trains the trial
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from pipeline.files import atomic, locked, try_lock, write_json
from pipeline.trial import TrialRecord


class GridStore:
    """The files of one grid's sweeps, under a results folder."""

    def __init__(self, results: str | Path, grid: str):
        self.results, self.grid = Path(results).resolve(), grid
        self.root = self.results / grid

    @classmethod
    def of_table(cls, table: str | Path) -> GridStore:
        """The store beside a results table ``<results>/<grid>.parquet``."""
        table = Path(table)
        return cls(table.parent, table.stem)

    # --- the grid ---------------------------------------------------------------------------
    @property
    def table(self) -> Path:
        return self.results / f"{self.grid}.parquet"

    @property
    def summary(self) -> Path:
        return self.root / "sweep.json"

    def last_stop(self) -> str:
        """The stop the grid's next sweep continues: the last sweep's, where it stopped at its time limit,
        else the one that sweep continued ('' for none). What tells the workflow a stopped sweep must run again."""
        summary = json.loads(self.summary.read_text()) if self.summary.is_file() else {}
        return summary.get("stop") or summary.get("continues") or ""

    @property
    def best(self) -> Path:
        return self.root / "best.json"

    @property
    def tune_storage(self) -> Path:
        return self.root / "ray"

    def identity(self) -> str:
        """The store's own id, made once and kept: its MLflow runs carry it, so that a rerun finds
        them and no other results folder (another clone, another user) on one tracking server does."""
        path = self.root / "store.json"
        if not path.is_file():
            with locked(path.with_suffix(".lock")):
                if not path.is_file():
                    write_json(path, {"id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            value = json.loads(path.read_text())["id"]
        except (OSError, ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError(f"{path} is damaged (its 'id' must be 32 hex digits); delete it to give the grid's MLflow runs "
                             "a new id (its trials are kept)")  # fmt: skip
        return value

    # --- a trial ----------------------------------------------------------------------------
    def folder(self, key: str) -> Path:
        return self.root / "trials" / key

    def checkpoint(self, key: str) -> Path:
        return self.folder(key) / "checkpoint.pt"

    def final_state(self, key: str) -> Path:
        return self.folder(key) / "final.pt"

    def stop_request(self, token: str) -> Path:
        """The file a sweep's ``Limit.request()`` writes: its trials stop at their next step."""
        return self.root / f".stop-{token}"

    def member_folder(self, key: str, k: int) -> Path:
        return self.folder(key) / f"member{k}"

    def lock(self, key: str, on_wait=None) -> AbstractContextManager:
        """Held while a process trains trial ``key``: another process waits, then finds its record."""
        self.folder(key).mkdir(parents=True, exist_ok=True)
        return locked(self.folder(key) / ".lock", on_wait)

    def busy(self, key: str) -> bool:
        """Whether another process holds trial ``key``'s lock now (it is training it)."""
        if not self.folder(key).is_dir():
            return False
        handle = try_lock(self.folder(key) / ".lock")
        if handle is None:
            return True
        handle.close()
        return False

    def record(self, key: str) -> TrialRecord | None:
        path = self.folder(key) / "record.json"
        if not path.is_file():
            return None
        try:
            return TrialRecord.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:  # written atomically, so only a hand or a disk damages one
            raise ValueError(f"{path} is damaged ({type(exc).__name__}: {exc}); delete it to train that trial again") from None

    def records(self) -> list[TrialRecord]:
        """Every finished trial of the grid, of any sweep of it (under any budget), that can be read."""
        found = []
        for path in sorted(self.root.glob("trials/*/record.json")):
            try:
                found.append(self.record(path.parent.name))
            except ValueError:  # damaged: the sweep that owns it says so before its compute
                continue
        return found

    def start_from(self, key: str, shorter: TrialRecord | None) -> None:
        """Trial ``key`` starts afresh (None), or from finished trial ``shorter``'s final state: a copy
        (the shorter result stays whole) becomes its checkpoint, and its record will say so."""
        marker, segments = self.folder(key) / "continued.json", self.folder(key) / "segments.json"
        if shorter is None:
            marker.unlink(missing_ok=True)
            segments.unlink(missing_ok=True)
            return
        write_json(marker, {"trial": shorter.trial.key, "step": shorter.iterations})
        write_json(segments, shorter.where_trained())
        with atomic(self.checkpoint(key)) as tmp:
            shutil.copyfile(self.final_state(shorter.trial.key), tmp)

    def segments(self, key: str) -> list[dict]:
        """Where trial ``key`` trained, run by run: [{'device', 'type', 'from', 'to', 'seconds'}], oldest first."""
        path = self.folder(key) / "segments.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def open_segment(self, key: str, device: str, device_type: str, step: int) -> None:
        """A run of trial ``key`` starts training at ``step`` on ``device``."""
        segment = {"device": device, "type": device_type, "from": step, "to": step, "seconds": 0.0}
        write_json(self.folder(key) / "segments.json", [*self.segments(key), segment])

    def extend_segment(self, key: str, step: int, seconds: float) -> None:
        """The current run of trial ``key`` has reached ``step`` (a checkpoint, a stop, the end)."""
        done = self.segments(key)
        write_json(self.folder(key) / "segments.json", [*done[:-1], done[-1] | {"to": step, "seconds": round(seconds, 2)}])

    def continued(self, key: str) -> dict | None:
        """Where trial ``key`` started, if it continued a shorter one (``start_from``)."""
        path = self.folder(key) / "continued.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def done(self, key: str) -> bool:
        return (self.folder(key) / "record.json").is_file()

    def write_record(self, record: TrialRecord) -> None:
        """The trial is done: its record, written atomically, and no checkpoint left behind."""
        key = record.trial.key
        write_json(self.folder(key) / "record.json", record.to_dict())
        self.checkpoint(key).unlink(missing_ok=True)

    def save_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic(self.folder(key) / "arrays.npz") as tmp:
            np.savez_compressed(tmp, **arrays)

    def has_arrays(self, key: str) -> bool:
        return (self.folder(key) / "arrays.npz").is_file()

    def arrays(self, key: str, member: int) -> dict[str, np.ndarray]:
        """Member ``member``'s saved arrays (each without the leading model axis)."""
        with np.load(self.folder(key) / "arrays.npz") as z:
            return {name: z[name][member] for name in z.files}

    def cached(self, key: str, compute):
        """The value stored under ``key``, or ``compute()``'s, stored (JSON): work trials share."""
        path = self.root / "cache" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path.with_suffix(".lock")):
            if not path.is_file():
                write_json(path, {"value": compute()})
            return json.loads(path.read_text())["value"]

    # --- keys of an earlier version ------------------------------------------------------------
    @property
    def rekey_log(self) -> Path:
        return self.root / "rekeyed.json"

    def rekeyed(self) -> list[dict]:
        """Every rename of trials from an earlier version's keys: [{'date', 'keys': {old: new}, 'done'}]."""
        return json.loads(self.rekey_log.read_text())["migrations"] if self.rekey_log.is_file() else []

    def aliases(self) -> dict[str, list[str]]:
        """Trial key -> the keys earlier versions gave it (what its older MLflow runs are tagged with), oldest first."""
        found: dict[str, list[str]] = {}
        for m in self.rekeyed():
            for old, new in m["keys"].items():
                found.setdefault(new, []).append(old)
        return found

    def rekey(self, keys: dict[str, str]) -> None:
        """Rename trials ``keys`` (old -> new) everywhere the store names them: their folders, records,
        continuation markers, the last sweep's summary and the results table. The rename is logged
        first and every step is idempotent, so an interrupted one completes on the next call."""
        if not keys:
            return
        log = self.rekeyed()
        pending = next((m for m in log if not m["done"]), None)
        if pending is None:
            pending = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "keys": dict(keys), "done": False}
            log.append(pending)
        else:
            pending["keys"] |= keys
        write_json(self.rekey_log, {"migrations": log})
        rename = pending["keys"]
        for old, new in rename.items():
            if self.folder(new).exists() and self.folder(old).exists():
                raise ValueError(f"{self.folder(old)} and {self.folder(new)} both hold trial {new}: keep one (delete the other) and rerun")
            if self.folder(old).exists():
                self.folder(old).rename(self.folder(new))
            record = self.folder(new) / "record.json"
            if record.is_file():
                write_json(record, json.loads(record.read_text()) | {"key": new})
            marker = self.folder(new) / "continued.json"
            if marker.is_file():
                started = json.loads(marker.read_text())
                write_json(marker, started | {"trial": rename.get(started["trial"], started["trial"])})
        if self.summary.is_file():
            summary = json.loads(self.summary.read_text())
            write_json(self.summary, summary | {"keys": [rename.get(k, k) for k in summary.get("keys", [])]})
        if self.table.is_file():
            import pandas as pd

            table = pd.read_parquet(self.table)
            table["trial_key"] = table["trial_key"].map(lambda k: rename.get(k, k))
            with atomic(self.table) as tmp:
                table.to_parquet(tmp, index=False)
        pending["done"] = True
        write_json(self.rekey_log, {"migrations": log})

    # --- what a compact copy keeps (a reference, pipeline.reference) ----------------------------
    #: a trial's files that say what it gave and what a run continues from: its record, its figures'
    #: arrays, its checkpoint or final state, where it started; not its members' copies or its lock
    ESSENTIAL = ("record.json", "arrays.npz", "checkpoint.pt", "final.pt", "continued.json", "segments.json")

    def trial_keys(self) -> list[str]:
        """Every trial with a folder in the store, of any sweep of the grid."""
        return sorted(p.name for p in self.root.glob("trials/*") if p.is_dir())

    def essentials(self, key: str) -> list[Path]:
        """Trial ``key``'s files of ``ESSENTIAL`` that exist."""
        return [self.folder(key) / name for name in self.ESSENTIAL if (self.folder(key) / name).is_file()]

    def continues_from(self, key: str) -> bool:
        """Whether a run can continue trial ``key``: its checkpoint, or a finished trial's final state."""
        return any(p.name in ("checkpoint.pt", "final.pt") for p in self.essentials(key))

    def shared(self) -> list[Path]:
        """The grid's files that are no trial's: the last sweep's summary, its renames and the values trials share."""
        return [p for p in [self.summary, self.rekey_log, *sorted(self.root.glob("cache/*.json"))] if p.is_file()]
