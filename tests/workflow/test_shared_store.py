"""Two sweeps on one results folder: each counts what it trained itself, and what it found trained by
the other (``sweep.json``), not every trial it once had to do."""

import dataclasses
import json

import pytest

from pipeline import sweep
from pipeline.executors import inline
from tests.workflow.test_attack import write_grid

pytestmark = pytest.mark.slow  # trains


def test_the_summary_counts_what_this_sweep_trained(tmp_path, data_root, monkeypatch):
    grid = write_grid(tmp_path, iterations=5, test_samples=20, models=["c-STN-1", "IC-STN-2"])
    real = inline.run_trial

    def another_process_first(trial, ctx, *args):  # the first trial is trained by another sweep sharing the store
        other = dataclasses.replace(ctx, sweep_id="another") if trial.model == "c-STN-1" else ctx
        return real(trial, other, *args)

    monkeypatch.setattr(inline, "run_trial", another_process_first)
    sweep.sweep(grid, tmp_path / "r", data_root / "processed", {}, "inline", track=False)
    summary = json.loads((tmp_path / "r" / "align" / "sweep.json").read_text())
    assert (summary["trials"], summary["trained"], summary["trained_by_another"]) == (2, 1, 1)
