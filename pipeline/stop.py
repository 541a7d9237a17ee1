"""When a sweep stops before it is done: a wall-clock limit (``stop_after: 8m``), or a request.

A ``Limit`` travels with the sweep's ``Context`` to every trial, in this process or a Ray worker.
Trials ask it between training steps: once it is reached, each running trial writes its checkpoint
and stops, no trial starts, and the sweep ends saying so. Running the same command again continues
every trial from its checkpoint, exactly.

The limit is an absolute time (``time.time()``), so that every worker of a sweep shares it. A
request (``Limit.request()``, what a signal handler may call) stops the trials the same way: it
writes a file that every trial looks for.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

UNITS = {"s": 1, "m": 60, "h": 3600}
DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*")
#: The limit a sweep takes when given no other (``time.time()`` seconds): how a workflow gives one to all its sweeps
DEADLINE_ENV = "ICSTN_DEADLINE"
#: How often a trial looks for a request file (seconds): a step is far cheaper than a file system call
REQUEST_POLL = 1.0


def parse_duration(text: str, where: str = "stop_after") -> float:
    """Seconds of '90s', '8m', '1.5h'; ValueError naming ``where`` and what is allowed."""
    match = DURATION.fullmatch(str(text))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{where}: bad value {text!r}; allowed: a positive number with a unit, s, m or h (e.g. 90s, 8m, 1.5h)")
    return float(match[1]) * UNITS[match[2]]


def export_deadline(stop_after: str | None) -> None:
    """Give this process's jobs (a workflow's sweeps) the limit ``stop_after`` from now, through their
    environment (among their tracked settings it would rerun them); None: no limit."""
    if stop_after:
        os.environ[DEADLINE_ENV] = repr(time.time() + parse_duration(stop_after, "config key 'stop_after'"))
    else:
        os.environ.pop(DEADLINE_ENV, None)


class LimitReached(Exception):
    """Work a sweep needs was stopped at its limit (a search's samples); their checkpoints are written."""


@dataclass(frozen=True)
class Limit:
    """When a sweep's trials stop early; none of its fields set: never."""

    deadline: float | None = None  # time.time() at which the trials stop
    request_file: str | None = None  # once this file exists, the trials stop (a request)
    step: int | None = None  # every trial stops on reaching this step: a deterministic interruption, for checks
    _polled: dict = field(default_factory=dict, compare=False, repr=False)  # when the request file was last looked for

    @classmethod
    def after(cls, stop_after: str | None, request_file: str | Path | None = None, where: str = "stop_after") -> Limit:
        """The limit ``stop_after`` (e.g. '8m') from now, or none; ValueError naming ``where`` for a bad duration."""
        deadline = time.time() + parse_duration(stop_after, where) if stop_after else None
        return cls(deadline, str(request_file) if request_file else None)

    def to_dict(self) -> dict:
        return {"deadline": self.deadline, "request_file": self.request_file, "step": self.step}

    def reached(self, step: int | None = None) -> bool:
        """Whether trials must stop now; ``step``: the asking trial's (for ``self.step``)."""
        if self.step is not None and step is not None and step >= self.step:
            return True
        return self.time_up() or self.requested()

    def time_up(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def requested(self) -> bool:
        if self.request_file is None:
            return False
        now = time.monotonic()
        if now - self._polled.get("at", -REQUEST_POLL) < REQUEST_POLL:
            return self._polled.get("found", False)
        self._polled.update(at=now, found=Path(self.request_file).exists())
        return self._polled["found"]

    def request(self) -> None:
        """Stop every trial of the sweep at its next step (they see it within ``REQUEST_POLL`` seconds)."""
        if self.request_file is not None:
            Path(self.request_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.request_file).touch()
            self._polled.update(at=time.monotonic(), found=True)

    def withdraw(self) -> None:
        """Remove this sweep's request file, if any (the sweep is over)."""
        if self.request_file is not None:
            Path(self.request_file).unlink(missing_ok=True)
