"""A grid's ``search:``: Optuna over its space, on a validation holdout of the training set.

The test set is never looked at. By default one setting is tuned, on the grid's first model at
its first noise level, and shared by every model (``search.per_model: false``); with
``per_model: true`` each model is tuned on its own. The best setting goes to the store's
``best.json`` (and the sweep's MLflow parent run), and the grid's trials are then trained with it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pipeline.files import write_json
from pipeline.runner import Context
from pipeline.store import GridStore
from pipeline.trial import Trial

if TYPE_CHECKING:
    from pipeline.grids import Grid


def best_settings(grid: Grid, trials: list[Trial], ctx: Context, settings: dict, executor, tracker) -> dict[str, dict]:
    """model -> its best setting (with its validation ``objective``), for every model of the grid."""
    search = grid.search
    tuned = grid.models if search.per_model else grid.models[:1]
    how = "each model on its own" if search.per_model else f"on {tuned[0]}, shared by every model"
    print(f"{grid.name}: Optuna search, {search.num_samples} samples {how}, validation holdout of {search.validation_size}",
          file=sys.stderr)  # fmt: skip
    best = {}
    for model in tuned:
        first = next(t for t in trials if t.model == model).for_search(search.validation_size, grid.sigma_px[0])
        best[model] = executor.search(first, ctx, settings, tracker, search)
    summary = {"model": tuned[0], "split": "validation", "tuned": "per model" if search.per_model else "shared", **best[tuned[0]]}
    write_json(GridStore(ctx.results, grid.name).best, summary | ({"per_model": best} if search.per_model else {}))
    return best if search.per_model else dict.fromkeys(grid.models, best[tuned[0]])


def apply(trials: list[Trial], best: dict[str, dict]) -> list[Trial]:
    """The trials with their model's best setting."""
    return [t.with_overrides(**{k: v for k, v in best[t.model].items() if k != "objective"}) for t in trials]
