"""What a reference keeps of each trial, and how many bytes that is, known before any training.

A reference (``pipeline.reference``) is committed, so it keeps only what its reports read and what
its next run continues from. Of each trial of its sweep:

    record.json, continued.json   always (what it gave, where it started)
    checkpoint.pt                 while it is unfinished: the next run continues exactly from it
    final.pt                      only once finished short of the reference's goal (the grid's own
                                  iterations): a longer budget continues it. A trial finished at
                                  its goal has no longer budget to grow into, so its state goes.
    arrays.npz                    only where the experiment's figures draw trained models (MNIST,
                                  GTSRB; the planar figures draw none), and only in the trials that
                                  hold the model's lowest finished seed, cut to the members up to
                                  that seed's last: the member ``pipeline.report.figures.arrays`` reads.

The size of that is bounded from the grid alone (``estimate``): weights from the models' parameter
counts (SGD without momentum keeps no optimiser state), arrays from their shapes in float32 as
stored uncompressed, and the curves and records by their number of points.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store import GridStore
from pipeline.trial import Trial, TrialRecord

MiB = 2**20
#: A reference's cap on its unpacked bytes (it is committed); Table 3's GTSRB models hold 197K
#: weights each, so its cap is larger (at 3 seeds: 11.3 MiB of checkpoints, 9.4 MiB of arrays).
CAP = 16 * MiB
CAPS = {"table3": 24 * MiB}
# The bounds of what a trial writes besides its weights and arrays, from its JSON record and the
# curves its state pickles (measured at 2.2 KB a member for 40 loss and 6 test points; doubled)
RECORD_BYTES = 16 * 1024  # the trial, its provenance
MEMBER_BYTES = 2 * 1024  # a member's metrics and test errors by unroll count
LOSS_POINT_BYTES = 2 * 48  # in the record and in the state
EVAL_POINT_BYTES = 2 * 320
#: loss points a member's curve has at most: pipeline.runner.log_every gives about 100, at most 400
LOSS_POINTS = 400
ALIGNMENT_SAMPLES = 8  # pipeline.runner.ALIGNMENT_SAMPLES (a test holds them together)


def cap(grid: str) -> int:
    """The most bytes ``grid``'s reference may hold."""
    return CAPS.get(grid, CAP)


#: The experiments whose figures draw trained models' arrays (``pipeline.report.figures``, ``Figure.learnt``:
#: a test holds the two together). Stated here because a GPU machine packs without matplotlib.
LEARNT = frozenset({"mnist", "gtsrb"})


def arrays_prefix(members, seed: int) -> int:
    """How many leading members a trial keeps arrays of, for figures that read ``seed``: up to its last member of that seed."""
    found = [i for i, m in enumerate(members) if m.seed == seed]
    return found[-1] + 1 if found else 0


def copy_trial(store: GridStore, key: str, target: GridStore, goal: int | None, arrays_members: int) -> None:
    """Trial ``key``'s kept files (module docstring) from ``store`` into ``target``: ``goal`` None keeps
    every final state; ``arrays_members`` leading members of its arrays (0: none)."""
    record = store.record(key)
    for path in store.essentials(key):
        if path.name == "final.pt" and record is not None and goal is not None and record.iterations >= goal:
            continue
        if path.name == "arrays.npz":
            if arrays_members:
                _cut_arrays(path, target.folder(key) / path.name, arrays_members)
            continue
        target.folder(key).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target.folder(key) / path.name)


def arrays_kept(records: list[TrialRecord], experiment: str) -> dict[str, int]:
    """Finished trial key -> the leading members whose arrays a reference keeps (module docstring)."""
    if experiment not in LEARNT:
        return {}
    lowest: dict[str, int] = {}
    for r in records:
        lowest[r.trial.model] = min([lowest.get(r.trial.model, math.inf), *(m.seed for m in r.trial.members)])
    kept = {r.trial.key: arrays_prefix(r.trial.members, lowest[r.trial.model]) for r in records}
    return {k: n for k, n in kept.items() if n}


def _cut_arrays(source: Path, target: Path, members: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with np.load(source) as z:
        np.savez_compressed(target, **{name: z[name][:members] for name in z.files})


# --- the size, before any training -----------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """The bound on a reference's bytes, and its parts."""

    grid: str
    seeds: int
    trials: int
    weights: int  # checkpoints or final states
    arrays: int
    records: int

    @property
    def total(self) -> int:
        return self.weights + self.arrays + self.records

    def line(self) -> str:
        return (f"{self.grid} reference at {self.seeds} seed{'s' * (self.seeds != 1)}: at most {self.total / MiB:.2f} MiB "
                f"({self.trials} trials: weights {self.weights / MiB:.2f}, arrays {self.arrays / MiB:.2f}, records and curves "
                f"{self.records / MiB:.2f}) of its cap of {cap(self.grid) / MiB:g} MiB")  # fmt: skip


def estimate(grid_name: str, experiment: str, trials: list[Trial]) -> Estimate:
    """The most bytes the reference of ``trials`` (one grid's sweep) can hold, whatever has finished:
    each trial's state (checkpoint or final.pt: never both), record and curves, plus the arrays of
    the members ``arrays_kept`` may keep (for each model, the worst lowest seed)."""
    from icstn import models
    from icstn.train import eval_steps

    weights = records = arrays = 0
    by_model: dict[str, list[Trial]] = {}
    for t in trials:
        cfg = models.get_config(t.experiment, t.model, t.init)
        k, iterations = len(t.members), t.train["iterations"]
        weights += k * _state_bytes(cfg)
        points = min(iterations, LOSS_POINTS) + 1
        evals = len(eval_steps(iterations, t.train["curve_per_decade"], t.train["eval_every"])) + 1
        records += RECORD_BYTES + k * (MEMBER_BYTES + points * LOSS_POINT_BYTES + evals * EVAL_POINT_BYTES)
        by_model.setdefault(t.model, []).append(t)
    if experiment in LEARNT:
        for name, mine in by_model.items():
            cfg = models.get_config(experiment, name, mine[0].init)
            # the lowest finished seed is some finished trial's lowest, and only the trials whose lowest it is keep arrays
            lowest = {t.key: min(m.seed for m in t.members) for t in mine}
            members = max(sum(arrays_prefix(t.members, s) for t in mine if lowest[t.key] == s) for s in lowest.values())
            arrays += members * _arrays_bytes(cfg)
    seeds = len({m.seed for t in trials for m in t.members})
    return Estimate(grid_name, seeds, len(trials), weights, arrays, records)


def _state_bytes(cfg) -> int:
    """One member's weights as a state stores them (float32), plus a pickle's overhead per tensor."""
    from icstn.models import AlignNet

    state = AlignNet(cfg, [0]).state_dict()
    return sum(t.numel() * 4 + 512 for t in state.values())


def _arrays_bytes(cfg) -> int:
    """One member's arrays (``pipeline.runner._arrays``), float32, uncompressed: the alignment
    (1 + warps, samples, C, S, S) and, with a classifier, the class means and variances."""
    image = cfg.channels * cfg.size * cfg.size * 4
    out = (1 + max(cfg.n_warps, 1)) * ALIGNMENT_SAMPLES * image
    return out + (2 * cfg.num_classes * image if cfg.classifier else 0) + 1024
