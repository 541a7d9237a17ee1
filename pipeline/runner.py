"""Running one trial: K models trained together, evaluated, and recorded in its store.

The same function runs inside a Ray Tune worker and in the inline executor; a ``Reporter``
hides the difference (where intermediate metrics and checkpoints go, where a retry resumes).

A trial resumes from its own checkpoint; without one, it continues a finished trial of its grid
that differs from it only in a shorter budget (``iterations``), from that trial's final state.
Either way the result is what training from scratch gives, bit for bit on a CPU. The sweep's
``Limit`` stops it between steps, after a checkpoint (``icstn.train.Stopped``).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from icstn import checkpoint, data, experiments, models
from icstn.train import Callback, TrainConfig, Trainer, extends
from pipeline import files, provenance
from pipeline.images import save_image_grid
from pipeline.stop import Limit
from pipeline.store import GridStore
from pipeline.trial import MemberResult, Trial, TrialRecord, digest

ALIGNMENT_SAMPLES = 8
CHECKPOINT_EVERY = 10_000  # at most this many steps between checkpoints, however long the run


class Unrecoverable(RuntimeError):
    """A trial stopped by an error no retry mends (``UNRECOVERABLE``); the sweep stops, in one line."""


#: A full disk, a checkpoint the trial cannot resume: an executor stops the sweep on them at once
#: (Ray Tune would retry each ray.max_failures times, every retry failing as the first did).
UNRECOVERABLE = (files.DiskFull, checkpoint.CheckpointError)


@dataclass(frozen=True)
class Context:
    """Where and how a sweep's trials run: the same for every trial of it."""

    data: str  # the prepared datasets
    results: str  # the results folder (each grid's store is under it)
    device: str  # resolved: cpu, cuda or cuda:N (pipeline.settings.resolve)
    cuda_graph: bool
    threads: int = 1  # torch threads of one trial (a Ray trial's CPUs)
    limit: Limit = field(default_factory=Limit)  # when the trials stop early (never, unless set)
    sweep_id: str = ""  # the sweep process's own: a record says which sweep trained it (another may share the store)

    def store(self, trial: Trial) -> GridStore:
        return GridStore(self.results, trial.grid)

    def to_dict(self) -> dict:
        """Plain values (what a Ray worker receives); ``from_dict`` reads them back."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "limit"}, "limit": self.limit.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Context:
        return cls(**d | {"limit": Limit(**d.get("limit", {}))})


class Reporter:
    """Where a running trial sends metrics and checkpoints (inline: straight to the tracker)."""

    def __init__(self, store: GridStore, key: str, on_result=None):
        self.store, self.key, self.on_result = store, key, on_result

    def report(self, step: int, per_member: list[dict], checkpoint: Path | None = None) -> None:
        if self.on_result is not None:
            self.on_result(step, per_member)

    def resume(self, trainer: Trainer) -> bool:
        """Load the trial's checkpoint into ``trainer``, if there is one; True when it did."""
        path = self.store.checkpoint(self.key)
        if not path.is_file():
            return False
        trainer.load(path)
        return True


class _Report(Callback):
    def __init__(self, reporter: Reporter):
        self.reporter, self.started = reporter, time.perf_counter()

    def on_log(self, trainer, step, losses):
        self.reporter.report(step, [{"train_loss": v} for v in losses])

    def on_eval(self, trainer, step, results):
        self.reporter.report(step, results)

    def on_checkpoint(self, trainer, step):
        store, key = self.reporter.store, self.reporter.key
        path = trainer.save(store.checkpoint(key))
        store.extend_segment(key, step, time.perf_counter() - self.started)  # what the checkpoint holds was trained here
        self.reporter.report(step, [{} for _ in trainer.seeds], checkpoint=path)


def load_dataset(trial: Trial, data_root: str | Path) -> tuple[data.Dataset, str]:
    """The trial's data: the test set (fixed subset), or a validation holdout for a search."""
    ds = data.load(data_root, trial.experiment)
    if trial.validation_size:
        return ds.holdout(trial.validation_size, seed=0), "validation"
    if not experiments.is_alignment(trial.experiment):
        ds = ds.subsample_test(trial.test_samples)
    return ds, "test"


def log_every(iterations: int) -> int:
    """Steps between training-loss points: about 100 points, at a power of two, so that a longer budget's
    points are a subset of a shorter one's (a continued run keeps the curve it would have from scratch)."""
    return 1 << max(0, (iterations // 100).bit_length() - 1)


def train_config(trial: Trial, cuda_graph: bool) -> TrainConfig:
    t = trial.train
    iterations = t["iterations"]
    return TrainConfig(
        **t,
        cuda_graph=cuda_graph,
        log_every=log_every(iterations),
        checkpoint_every=max(1, min(t["eval_every"] or iterations // 5, CHECKPOINT_EVERY)),
        planar_test_samples=trial.test_samples or TrainConfig.planar_test_samples,  # None: the trainer's own number
    )


def check_checkpoint(trial: Trial, ctx: Context) -> None:
    """CheckpointError naming a trial's checkpoint that its trainer could not resume: unreadable,
    trained with other settings (another model, members or rates: its result would be labelled
    as this trial's), or on another type of device (its result would be neither device's). Run
    before any compute, where a refusal in the worker would be retried."""
    path = ctx.store(trial).checkpoint(trial.key)
    if path.is_file():
        remedy = "delete it to retrain that trial afresh"
        segments = ctx.store(trial).segments(trial.key)
        if segments and segments[-1]["type"] != device_type(ctx.device):
            where = f"{segments[-1]['device']}, up to step {segments[-1]['to']:,}"
            raise checkpoint.CheckpointError(f"checkpoint {path} was trained on {where}; this sweep runs on {ctx.device}, and a trial "
                                             f"continued there would be neither device's result: continue it on a {segments[-1]['type']} "
                                             f"machine, or {remedy} here")  # fmt: skip
        model_cfg = models.get_config(trial.experiment, trial.model, trial.init)
        wanted = checkpoint.identity(model_cfg, train_config(trial, ctx.cuda_graph), trial.seeds, trial.sigma_px)
        checkpoint.check(checkpoint.read(path, remedy=remedy), wanted, f"checkpoint {path}", remedy)


def device_type(device: str) -> str:
    """'cpu' or 'cuda' of a resolved device ('cuda:1' -> 'cuda'): what a trial may continue on."""
    return device.split(":")[0]


def run_trial(trial: Trial, ctx: Context, reporter: Reporter | None = None, where: dict | None = None) -> TrialRecord:
    """Train, evaluate and record one trial; returns its record. Resumes from a checkpoint, or
    continues a shorter finished trial; raises ``icstn.train.Stopped`` (its checkpoint written) when
    ``ctx.limit`` is reached first.

    ``where`` (e.g. the Ray node) is recorded with the provenance. Two processes never train one
    trial: the second waits for the first, then returns its record.
    """
    store = ctx.store(trial)
    waiting = lambda: print(f"trial {trial.key}: another process is training it; waiting", file=sys.stderr, flush=True)  # noqa: E731
    with files.writing(store.root), store.lock(trial.key, waiting):  # a full disk: DiskFull, naming what could not be written
        return store.record(trial.key) or _train(trial, ctx, store, reporter or Reporter(store, trial.key), where)


def _train(trial: Trial, ctx: Context, store: GridStore, reporter: Reporter, where: dict | None) -> TrialRecord:
    start = time.perf_counter()
    cfg = train_config(trial, ctx.cuda_graph)
    continued = None if store.checkpoint(trial.key).is_file() else continue_shorter(trial, store, cfg, ctx.device)
    origin = f", continuing trial {continued['trial']} from step {continued['step']:,}" if continued else ""
    print(f"trial {trial.key}: training {len(trial.members)} model(s){origin}", file=sys.stderr, flush=True)
    dataset, split = load_dataset(trial, ctx.data)
    model_cfg = models.get_config(trial.experiment, trial.model, trial.init)
    trainer = Trainer(model_cfg, cfg, dataset, trial.seeds, trial.sigma_px, ctx.device, callbacks=(_Report(reporter),))
    resumed_from = trainer.step if reporter.resume(trainer) else None
    store.open_segment(trial.key, provenance.device_name(ctx.device), device_type(ctx.device), trainer.step)
    final = trainer.fit(stop=ctx.limit.reached)
    store.extend_segment(trial.key, trainer.step, time.perf_counter() - start)
    trainer.save(store.final_state(trial.key))  # what a longer budget continues from
    if experiments.is_alignment(trial.experiment):  # calibration: the best one-step linear predictor
        for k, member in enumerate(trial.members):
            same = {"linear_baseline": 1, "noise_warp": trial.train["noise_warp"], **asdict(member), "test_samples": trial.test_samples}
            key = digest(same)  # what the value depends on: models of one grid share it
            final[k]["linear_error"] = store.cached(key, lambda k=k: trainer.evaluator.linear_baseline(k))
    by_warps = {n: trainer.evaluate(n_warps=n) for n in trial.test_warps}
    arrays = _arrays(trainer, model_cfg)
    store.save_arrays(trial.key, arrays)
    members = []
    for k, member in enumerate(trial.members):
        members.append(
            MemberResult(
                member.seed,
                member.sigma_px,
                metrics=final[k],
                test_warps={str(n): rows[k]["test_error"] for n, rows in by_warps.items()},
                curve=[[step, losses[k]] for step, losses in trainer.losses],
                test_curve=[[step, rows[k]] for step, rows in trainer.evaluations],
            )
        )
        _save_member(trainer, k, arrays, store.member_folder(trial.key, k))
    record = TrialRecord(
        trial=trial,
        split=split,
        iterations=trainer.step,
        test_samples_used=len(trainer.test_set()[0]),
        device=provenance.device_name(ctx.device),
        fast_path={"models_per_step": trainer.k, "cuda_graph": trainer.graphed, "tf32": trainer.device.type == "cuda" and trainer.cfg.tf32},
        seconds=round(time.perf_counter() - start, 2),
        resumed_from_step=resumed_from,
        continued_from=store.continued(trial.key),
        segments=store.segments(trial.key),
        members=tuple(members),
        where={**(where or {}), "sweep": ctx.sweep_id},
        provenance={"git_commit": provenance.git_commit(), **provenance.versions(), **provenance.data_source(ctx.data, trial.experiment)},
    )
    store.write_record(record)
    return record


def continue_shorter(trial: Trial, store: GridStore, cfg: TrainConfig, device: str) -> dict | None:
    """Start ``trial`` where the longest finished trial it extends ended (the same trial, a shorter
    budget, a schedule that makes it exact, the same type of device): that trial's final state, copied, becomes this one's
    checkpoint. Returns {'trial': its key, 'step': its iterations}, or None where there is none."""
    here = device_type(device)  # a result continued on another type of device would be neither device's
    done = [r for r in store.records() if trial.extends(r.trial) and extends(r.iterations, cfg) and store.final_state(r.trial.key).exists()
            and r.where_trained()[-1]["type"] == here]  # fmt: skip
    shorter = max(done, key=lambda r: r.iterations, default=None)
    store.start_from(trial.key, shorter)
    return store.continued(trial.key)


def _arrays(trainer: Trainer, model_cfg: models.ModelConfig) -> dict[str, np.ndarray]:
    arrays = {"alignment": trainer.alignment(ALIGNMENT_SAMPLES).numpy()}  # (K, T, n, C, S, S)
    if model_cfg.classifier is not None:
        mean, var = trainer.class_moments()  # (K, classes, C, S, S)
        arrays |= {"mean": mean.numpy(), "var": var.numpy()}
    return arrays


def _save_member(trainer: Trainer, k: int, arrays: dict, folder: Path) -> None:
    """Member k's weights (loadable into AlignNet(cfg, [seed])), alignment PNG and arrays."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    weights = {name: t[k : k + 1].clone() for name, t in trainer.model.state_dict().items()}
    with files.writing(folder):
        checkpoint.write(weights, folder / "model.pt")
        np.savez_compressed(folder / "arrays.npz", **{name: a[k] for name, a in arrays.items()})
        save_image_grid(folder / "alignment.png", arrays["alignment"][k])
