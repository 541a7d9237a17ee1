"""What a running sweep prints, the same lines whichever executor runs it (on stderr).

One line when a trial starts and one when it ends, with its error, and every ``every`` seconds
one line of where the running trials are::

    table2 [0/12] started IC-STN-4(a) σ=3.5 seeds 0-2
    table2 0:30 [4/12] running: IC-STN-4(a) σ=3.5 seeds 0-2 at 200/300 (8 s left), STN(a) σ=3.5 seeds 0-2 at 100/300 (20 s left)
    table2 [5/12] finished IC-STN-4(a) σ=3.5 seeds 0-2 in 41 s: test error 12.3% (mean of 3)
    table2 [5/12] stopped STN(a) σ=3.5 seeds 0-2 at 2,400/6,400 (checkpoint written)

A trial's time left is its remaining steps at the rate of its steps since its first report (so a
resumed trial counts from where it resumed), evaluations included. A finished trial gives one
mean per noise level, never one across them, and says over how many seeds.
"""

from __future__ import annotations

import sys
import time

from icstn import experiments
from pipeline.trial import Trial, TrialRecord


class Progress:
    def __init__(self, name: str, total: int, every: float = 30.0, stream=None):
        self.name, self.total, self.every = name, total, every
        self.stream = stream  # None: sys.stderr when printing (Tune pickles its callbacks; a stream does not pickle)
        self.done = 0
        self.running: dict[str, _Running] = {}
        self.start_time = self.last_line = time.monotonic()

    def started(self, trial: Trial) -> None:
        self.running[trial.key] = _Running(trial)
        self._print(f"{self._count()} started {trial.label}")

    def step(self, key: str, step: int) -> None:
        if key in self.running:
            self.running[key].at(step, time.monotonic())
        if time.monotonic() - self.last_line >= self.every:
            where = ", ".join(map(str, self.running.values()))
            self._print(f"{self._clock()} {self._count()} running: {where or 'none'}")

    def finished(self, record: TrialRecord) -> None:
        trial = record.trial
        self.running.pop(trial.key, None)
        self.done += 1
        unit = " px" if experiments.is_alignment(trial.experiment) else "%"
        by_sigma: dict[float, list[float]] = {}
        for m in record.members:
            by_sigma.setdefault(m.sigma_px, []).append(m.metrics["test_error"])
        several = len(by_sigma) > 1
        counts = {len(v) for v in by_sigma.values()}
        shared = counts.pop() if len(counts) == 1 else None  # one seed count for every level: said once, at the end
        means = ", ".join(f"{sum(v) / len(v):.3g}{unit}" + (f" at σ={s:g}" if several else "") + ("" if shared else f" ({_seeds(len(v))})")
                          for s, v in by_sigma.items())  # fmt: skip
        error = f"{record.split} error {means}" + (f" ({_seeds(shared, several)})" if shared and shared > 1 else "")
        self._print(f"{self._count()} finished {trial.label} in {record.seconds:.0f} s: {error}")

    def stopped(self, trial: Trial, step: int) -> None:
        """The trial stopped at the sweep's limit, its checkpoint written: a rerun continues it."""
        self.running.pop(trial.key, None)
        self._print(f"{self._count()} stopped {trial.label} at {step:,}/{trial.train['iterations']:,} (checkpoint written)")

    def failed(self, trial: Trial, why: str) -> None:
        self.running.pop(trial.key, None)
        self._print(f"{self._count()} failed {trial.label}: {why}")

    def _count(self) -> str:
        return f"[{self.done}/{self.total}]"

    def _clock(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.start_time), 60)
        return f"{minutes}:{seconds:02d}"

    def _print(self, line: str) -> None:
        self.last_line = time.monotonic()
        print(f"{self.name} {line}", file=self.stream or sys.stderr, flush=True)


def _seeds(n: int, several_means: bool = False) -> str:
    """Over how many seeds a mean is: 'mean of 3', 'means of 2', 'one seed'."""
    return f"mean{'s' if several_means else ''} of {n}" if n > 1 else "one seed"


class _Running:
    """A running trial: its last step, and its first reported step and when, for the time left."""

    def __init__(self, trial: Trial):
        self.trial, self.step, self.now = trial, 0, 0.0
        self.first: tuple[int, float] | None = None  # (step, time) of its first report

    def at(self, step: int, now: float) -> None:
        self.step, self.now = step, now
        if self.first is None:
            self.first = (step, now)

    def __str__(self) -> str:
        total = self.trial.train["iterations"]
        text = f"{self.trial.label} at {self.step}/{total}"
        if self.first is None or self.step <= self.first[0]:
            return text
        rate = (self.step - self.first[0]) / max(self.now - self.first[1], 1e-9)  # steps per second
        return f"{text} ({duration((total - self.step) / rate)} left)"


def duration(seconds: float) -> str:
    """'42 s', '7 min', '3.2 h': a time left, as precise as it is worth."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
