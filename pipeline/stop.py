"""When a sweep stops before it is done: a wall-clock limit (``stop_after: 8m``), or a request.

A ``Limit`` travels with the sweep's ``Context`` to every trial, in this process or a Ray worker.
Trials ask it between training steps: once it is reached, each running trial writes its checkpoint
and stops, no trial starts, and the sweep ends saying so. Running the same command again continues
every trial from its checkpoint, exactly.

The limit is a moment every worker of a sweep shares, kept on two clocks. On the machine that set
it, the boot clock (``clock()``: Linux's CLOCK_BOOTTIME, one clock for every process of a machine,
never stepped by NTP or a user's ``date -s``, and counting a suspend as time that passed): a clock
step moves no limit. A Ray worker on another node has its own boot clock, whose origin means
nothing here, so it reads the wall clock (``time.time()``) against the wall-clock deadline: machines
agree on wall time only through NTP, and a step of that node's clock moves only its own trials'
stop (each checkpoints, and the rerun continues). A workflow hands its deadline to its sweeps in
``DEADLINE_ENV`` as both (``Limit.env_value``).

A request (``Limit.request()``, what a signal handler may call) stops the trials the same way: it
writes a file that every trial looks for.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

UNITS = {"s": 1, "m": 60, "h": 3600}
DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*")
#: The limit a sweep takes when given no other (``Limit.env_value``): how a workflow gives one to all its sweeps
DEADLINE_ENV = "ICSTN_DEADLINE"
#: How often a trial looks for a request file (seconds): a step is far cheaper than a file system call
REQUEST_POLL = 1.0


def parse_duration(text: str, where: str = "stop_after") -> float:
    """Seconds of '90s', '8m', '1.5h'; ValueError naming ``where`` and what is allowed."""
    match = DURATION.fullmatch(str(text))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{where}: bad value {text!r}; allowed: a positive number with a unit, s, m or h (e.g. 90s, 8m, 1.5h)")
    return float(match[1]) * UNITS[match[2]]


def clock() -> float:
    """Seconds on this machine's boot clock: never stepped, counting a suspend, one for all its
    processes (CLOCK_BOOTTIME; where there is none, ``time.monotonic()``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


@functools.cache
def machine() -> str:
    """This machine's boot, where ``clock()`` means one thing: Linux's boot id, else the host's name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return platform.node()


def export_deadline(stop_after: str | None) -> None:
    """Give this process's jobs (a workflow's sweeps) the limit ``stop_after`` from now, through their
    environment (among their tracked settings it would rerun them); None: no limit."""
    if stop_after:
        os.environ[DEADLINE_ENV] = Limit.after(stop_after, where="config key 'stop_after'").env_value()
    else:
        os.environ.pop(DEADLINE_ENV, None)


class LimitReached(Exception):
    """Work a sweep needs was stopped at its limit (a search's samples); their checkpoints are written."""


@dataclass(frozen=True)
class Limit:
    """When a sweep's trials stop early; none of its fields set: never."""

    deadline: float | None = None  # time.time() at which the trials stop: read on a machine other than ``machine``
    request_file: str | None = None  # once this file exists, the trials stop (a request)
    step: int | None = None  # every trial stops on reaching this step: a deterministic interruption, for checks
    clock: float | None = None  # clock() at which the trials stop, on ``machine``: what a clock step cannot move
    machine: str | None = None  # machine() where ``clock`` was read
    _polled: dict = field(default_factory=dict, compare=False, repr=False)  # when the request file was last looked for

    @classmethod
    def after(cls, stop_after: str | None, request_file: str | Path | None = None, where: str = "stop_after") -> Limit:
        """The limit ``stop_after`` (e.g. '8m') from now, or none; ValueError naming ``where`` for a bad duration."""
        request_file = str(request_file) if request_file else None
        if not stop_after:
            return cls(None, request_file)
        seconds = parse_duration(stop_after, where)
        return cls(time.time() + seconds, request_file, clock=clock() + seconds, machine=machine())

    @classmethod
    def at(cls, value: str, request_file: str | Path | None = None) -> Limit:
        """The limit of ``env_value``'s text, or of a bare ``time.time()`` value; ValueError otherwise."""
        parts, request_file = str(value).split(), str(request_file) if request_file else None
        try:
            if len(parts) == 1:
                return cls(float(parts[0]), request_file)
            if len(parts) == 3:
                return cls(float(parts[0]), request_file, clock=float(parts[1]), machine=parts[2])
        except ValueError:
            pass
        raise ValueError(
            f"bad deadline {value!r}; allowed: a time.time() value, or {DEADLINE_ENV}'s '<time.time()> <boot clock> <machine>'"
        )

    def env_value(self) -> str:
        """The deadline as text for a child process (``at`` reads it): the wall clock's, the boot clock's and its machine."""
        return f"{self.deadline!r} {self.clock!r} {self.machine}" if self.clock is not None else repr(self.deadline)

    def to_dict(self) -> dict:
        return {"deadline": self.deadline, "request_file": self.request_file, "step": self.step, "clock": self.clock,
                "machine": self.machine}  # fmt: skip

    def remaining(self) -> float | None:
        """Seconds until the deadline (negative past it), on the boot clock where this machine set it; None: no deadline."""
        if self.deadline is None:
            return None
        if self.clock is not None and self.machine == machine():
            return self.clock - clock()
        return self.deadline - time.time()

    def reached(self, step: int | None = None) -> bool:
        """Whether trials must stop now; ``step``: the asking trial's (for ``self.step``)."""
        if self.step is not None and step is not None and step >= self.step:
            return True
        return self.time_up() or self.requested()

    def time_up(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

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
