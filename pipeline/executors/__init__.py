"""The backends a sweep runs its trials on, one module each.

Each has ``run(trials, ctx, settings, tracker)`` (train every trial, record it in its store and,
through ``tracker``, in MLflow) and ``search(trial, ctx, settings, tracker, search)`` (Optuna over
a space, on a validation holdout; returns the best setting and its objective).

* ``inline``: one trial after another in the calling process; needs only torch.
* ``tune``: Ray Tune, on local cores, a GPU or a Ray cluster, with retries from checkpoints.
"""

from __future__ import annotations

from importlib import import_module

NAMES = ("ray", "inline")


def get(name: str):
    """The executor module of ``name`` ('ray' is Ray Tune)."""
    if name not in NAMES:
        raise ValueError(f"unknown executor {name!r}; allowed: {list(NAMES)}")
    return import_module(f"pipeline.executors.{'tune' if name == 'ray' else name}")
