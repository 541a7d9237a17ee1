"""One trial: K models of one variant trained together, evaluated, and written to disk.

The same function runs inside a Ray Tune worker and in the inline executor; a ``Reporter``
hides the difference (where intermediate metrics and checkpoints go). A trial's outputs live in
``<out>/trials/<key>/``: ``record.json`` (written last, atomically: its presence means done),
``arrays.npz`` (alignment samples, class means and variances, for the figures) and
``member<k>/`` (model weights, alignment PNG, arrays: the MLflow artifacts of member k).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from icstn import data, models
from icstn.train import Callback, TrainConfig, Trainer
from pipeline import provenance
from pipeline.files import atomic, locked, write_json

ALIGNMENT_SAMPLES = 8
CHECKPOINT_EVERY = 10_000  # at most this many steps between checkpoints, however long the run


class Reporter:
    """Where a running trial sends metrics and checkpoints (inline: straight to the tracker)."""

    def __init__(self, trial_dir: Path, on_result=None):
        self.trial_dir, self.on_result = trial_dir, on_result

    def report(self, step: int, per_member: list[dict], checkpoint: Path | None = None) -> None:
        if self.on_result is not None:
            self.on_result(step, per_member)

    def restore(self) -> Path | None:
        path = self.trial_dir / "checkpoint.pt"
        return path if path.is_file() else None


class _Report(Callback):
    def __init__(self, reporter: Reporter, trial_dir: Path):
        self.reporter, self.trial_dir = reporter, trial_dir

    def on_log(self, trainer, step, losses):
        self.reporter.report(step, [{"train_loss": v} for v in losses])

    def on_eval(self, trainer, step, results):
        self.reporter.report(step, results)

    def on_checkpoint(self, trainer, step):
        path = trainer.save(self.trial_dir / "checkpoint.pt")
        self.reporter.report(step, [{} for _ in trainer.seeds], checkpoint=path)


def load_dataset(trial: dict, data_root: str | Path) -> tuple[data.Dataset, str]:
    """The trial's data: the test set (fixed subset), or a validation holdout for a search."""
    ds = data.load(data_root, trial["experiment"])
    if trial.get("validation_size"):
        return ds.holdout(trial["validation_size"], seed=0), "validation"
    if trial["experiment"] != "planar":
        ds = ds.subsample_test(trial["test_samples"])
    return ds, "test"


def train_config(trial: dict, cuda_graph: bool = True) -> TrainConfig:
    t = trial["train"]
    iterations = t["iterations"]
    return TrainConfig(
        **t,
        cuda_graph=cuda_graph,
        log_every=max(1, iterations // 100),
        checkpoint_every=max(1, min(t["eval_every"] or iterations // 5, CHECKPOINT_EVERY)),
        planar_test_samples=trial["test_samples"] or 1000,
    )


def run_trial(trial: dict, ctx: dict, reporter: Reporter | None = None, where: dict | None = None) -> dict:
    """Train, evaluate and record one trial; returns its record. Resumes from a checkpoint.

    ``ctx``: ``data`` (prepared datasets), ``out`` (the grid's output folder), ``device`` and
    optionally ``cuda_graph`` (default True). ``where`` (e.g. the Ray node) is recorded with the
    provenance. Two processes never train one trial: the second waits for the first's record.
    """
    trial_dir = Path(ctx["out"]) / "trials" / trial["key"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    waiting = lambda: print(f"trial {trial['key']}: another process is training it; waiting", file=sys.stderr, flush=True)  # noqa: E731
    with locked(trial_dir / ".lock", waiting):
        return read_record(trial_dir) or _train(trial, ctx, trial_dir, reporter or Reporter(trial_dir), where)


def _train(trial: dict, ctx: dict, trial_dir: Path, reporter: Reporter, where: dict | None) -> dict:
    start = time.perf_counter()
    data_root, device = ctx["data"], ctx["device"]
    print(f"trial {trial['key']}: training {len(trial['members'])} model(s)", file=sys.stderr, flush=True)
    dataset, split = load_dataset(trial, data_root)
    model_cfg = models.get_config(trial["experiment"], trial["model"])
    seeds = [m["seed"] for m in trial["members"]]
    sigmas = [m["sigma_px"] for m in trial["members"]]
    trainer = Trainer(
        model_cfg,
        train_config(trial, ctx.get("cuda_graph", True)),
        dataset,
        seeds,
        sigmas,
        device,
        callbacks=(_Report(reporter, trial_dir),),
    )
    resume = reporter.restore()
    if resume is not None:
        trainer.load(resume)
    resumed_from = trainer.step if resume is not None else None
    final = trainer.fit()
    by_warps = {n: trainer.evaluate(n_warps=n) for n in trial["test_warps"]}
    arrays = _save_arrays(trainer, model_cfg, trial_dir)
    members = []
    for k, member in enumerate(trial["members"]):
        members.append(
            {
                **member,
                "metrics": final[k],
                "test_warps": {str(n): rows[k]["test_error"] for n, rows in by_warps.items()},
                "curve": [[step, losses[k]] for step, losses in trainer.losses],
            }
        )
        _save_member(trainer, k, arrays, trial_dir / f"member{k}")
    record = {
        **{k: v for k, v in trial.items() if k != "members"},
        "split": split,
        "iterations": trainer.step,
        "test_samples_used": len(trainer.test_set()[0]),
        "device": provenance.device_name(device),
        "fast_path": {
            "models_per_step": trainer.k,
            "cuda_graph": trainer.graphed,
            "tf32": trainer.device.type == "cuda" and trainer.cfg.tf32,
        },
        "seconds": round(time.perf_counter() - start, 2),
        "resumed_from_step": resumed_from,
        "members": members,
        "where": where or {},
        "provenance": {
            "git_commit": provenance.git_commit(),
            **provenance.versions(),
            **provenance.data_source(data_root, trial["experiment"]),
        },
    }
    write_json(trial_dir / "record.json", record)
    (trial_dir / "checkpoint.pt").unlink(missing_ok=True)  # done: the record and weights remain
    return record


def _save_arrays(trainer: Trainer, model_cfg: models.ModelConfig, trial_dir: Path) -> dict:
    arrays = {"alignment": trainer.alignment(ALIGNMENT_SAMPLES).numpy()}  # (K, T, n, C, S, S)
    if model_cfg.classifier is not None:
        mean, var = trainer.class_moments()  # (K, classes, C, S, S)
        arrays |= {"mean": mean.numpy(), "var": var.numpy()}
    with atomic(trial_dir / "arrays.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return arrays


def _save_member(trainer: Trainer, k: int, arrays: dict, folder: Path) -> None:
    """Member k's weights (loadable into AlignNet(cfg, [seed])), alignment PNG and arrays."""
    from pipeline.report.plots import save_image_grid

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    weights = {name: t[k : k + 1].clone() for name, t in trainer.model.state_dict().items()}
    torch.save(weights, folder / "model.pt")
    np.savez_compressed(folder / "arrays.npz", **{name: a[k] for name, a in arrays.items()})
    save_image_grid(folder / "alignment.png", arrays["alignment"][k])


def read_record(trial_dir: Path) -> dict | None:
    path = trial_dir / "record.json"
    return json.loads(path.read_text()) if path.is_file() else None


def with_overrides(trial: dict, **train_overrides) -> dict:
    """A copy of ``trial`` with some training settings changed (hyper-parameter search)."""
    return {**trial, "train": {**trial["train"], **train_overrides}}
