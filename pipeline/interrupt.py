"""SIGTERM ends a sweep the way Ctrl-C does: schedulers (SLURM, Kubernetes, spot instances) stop jobs with it.

An interrupted sweep exits 130, marks its MLflow runs KILLED and keeps its checkpoints, so that
the same command resumes it. SIGTERM raises KeyboardInterrupt at once, where Ctrl-C under Tune
asks Tune to stop its trials: a scheduler signals every process of the job, Ray's own included,
and Tune cannot stop trials on a runtime that is going down.

Ray takes SIGTERM for itself while it starts: ``ray.init`` installs a handler that exits with
status 15, and its core worker a crash handler that prints ``*** SIGTERM received ***`` before
calling the previous one. ``kept_through_ray_init`` puts ours back and turns a SIGTERM that
landed meanwhile into the interrupt it was.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def sigterm_interrupts() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does (main thread only, as every signal handler)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame) -> None:
    # Once: a scheduler's SIGTERM can arrive twice (sent to every process of the job, and
    # forwarded by Snakemake), and the second must not cut short the marking of runs KILLED.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def kept_through_ray_init() -> Iterator[None]:
    """Around ``ray.init``: our SIGTERM handler back afterwards; Ray's exit on SIGTERM meanwhile becomes a KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():  # no handler can be set there, and Ray sets none
        yield
        return
    ours = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as exc:
        if exc.code != signal.SIGTERM or ours is not _interrupt:
            raise
        raise KeyboardInterrupt from None
    finally:
        if ours is not None:  # None: a handler not set from Python, which Python cannot put back
            signal.signal(signal.SIGTERM, ours)


def forward_sigterm_to_jobs() -> None:
    """In Snakemake's process: a SIGTERM reaches its running jobs too.

    Snakemake's own handler (kept, called after) starts no new job and waits for the running
    ones, which would finish a sweep of hours first. Each rule execs its step, so the job's
    process is the step itself, which then stops as on Ctrl-C."""
    from snakemake.shell import shell  # pinned release: its running shell jobs, by job id

    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        with shell._lock:
            jobs = list(shell._processes.values())
        for proc in jobs:
            proc.send_signal(signum)  # a job that has just ended is skipped
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, forward)
