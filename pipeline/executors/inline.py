"""The inline executor: the trials one after another in this process, with no Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icstn.train import Stopped
from pipeline.progress import Progress
from pipeline.runner import Context, Reporter, run_trial
from pipeline.stop import LimitReached
from pipeline.trial import Trial

if TYPE_CHECKING:
    from pipeline.grids import Search


def run(trials: list[Trial], ctx: Context, settings: dict, tracker=None) -> None:
    """Every trial in turn; once ``ctx.limit`` is reached, the running one checkpoints and no other starts.
    Several processes may run one sweep on one results folder: each takes next the first trial no
    other process is training, and waits for one only when all that are left are taken."""
    progress = Progress(trials[0].grid, len(trials))
    left = list(trials)
    while left:
        if ctx.limit.reached():
            return
        trial = next((t for t in left if not ctx.store(t).busy(t.key)), left[0])
        left.remove(trial)
        store = ctx.store(trial)
        progress.started(trial)
        if tracker is not None:
            tracker.start_trial(trial)

        def on_result(step, per_member, key=trial.key):
            progress.step(key, step)
            if tracker is not None:
                tracker.log(key, step, per_member)

        try:
            record = run_trial(trial, ctx, Reporter(store, trial.key, on_result))
        except Stopped as stopped:
            progress.stopped(trial, stopped.step)
            return
        progress.finished(record)
        if tracker is not None:
            tracker.finish_trial(record, store)


def search(trial: Trial, ctx: Context, settings: dict, tracker, search: Search) -> dict:
    """Optuna directly: the same space, validation objective and sampler seed as on Ray Tune."""
    import optuna

    stopped = []

    def objective(ot):
        overrides = {k: ot.suggest_float(k, r["low"], r["high"], log=r["log"]) for k, r in search.space.items()}
        sampled = trial.with_overrides(**overrides)
        record = ctx.store(sampled).record(sampled.key)
        if record is None:
            run([sampled], ctx, settings, tracker)
            record = ctx.store(sampled).record(sampled.key)
        if record is None:  # stopped at the limit: no further sample, and no best of some of them
            stopped.append(ot.number)
            ot.study.stop()
            raise optuna.TrialPruned()
        return record.objective

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=search.num_samples)
    if stopped:
        raise LimitReached(f"the search of {trial.model} stopped at sample {stopped[0] + 1} of {search.num_samples}")
    return {**study.best_params, "objective": study.best_value}
