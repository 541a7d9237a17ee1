"""A trainer's state on disk: weights, optimiser, step, loss curve and test curve, written atomically.

Nothing else needs saving: every draw is a function of (seed, step), so a trainer loaded at step
s continues exactly as one that had trained through s. A checkpoint also records what it was
trained with (model, members, training settings), and is resumed only by a trainer that would
have trained the same weights (``differences``).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from icstn.models import ModelConfig


class Trainer(Protocol):
    """What a checkpoint saves and restores of a trainer (``icstn.train.Trainer``), stated here so
    that the trainer's module imports this one and not the other way round."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    step: int
    seeds: list[int]
    sigmas: list[float]  # pixels
    losses: list[tuple]
    evaluations: list[tuple]
    cfg: Any  # icstn.train.TrainConfig, a dataclass
    model_cfg: ModelConfig
    device: torch.device
    stepper: Any  # restarts its schedule at a step: ``restart(step)``

#: Training settings in which a checkpoint may differ from the trainer that resumes it, because the
#: weights do not depend on them: when the loop logs, evaluates and saves (a resumed curve keeps its
#: earlier points); the fixed test set and its batching (the evaluations after the resume use the
#: trainer's own); and how a step runs on a device (a CUDA graph, TF32: the same step, and a run
#: begun on a CPU may go on on a GPU). Every other setting, including any added later, must match.
MAY_DIFFER = frozenset(
    {"log_every", "eval_every", "checkpoint_every", "eval_seed", "eval_batch", "planar_test_samples", "cuda_graph", "tf32"}
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or trained with other settings."""


def state_dict(trainer: Trainer) -> dict:
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.opt.state_dict(),
        "step": trainer.step,
        "seeds": trainer.seeds,
        "sigmas": trainer.sigmas,
        "losses": trainer.losses,
        "evaluations": trainer.evaluations,
        "train_config": asdict(trainer.cfg),
        "model_name": trainer.model_cfg.name,
        "model_config": asdict(trainer.model_cfg),  # the variant, its warp family and its init
    }


def identity(model_cfg: ModelConfig, cfg: Any, seeds: list[int], sigmas: list[float]) -> dict:
    """What a checkpoint must have been trained with to be resumed by a trainer of these settings."""
    return {"model_config": asdict(model_cfg), "seeds": list(seeds), "sigmas": list(sigmas), "train_config": asdict(cfg)}


def differences(state: dict, wanted: dict) -> dict[str, tuple]:
    """``{setting: (stored, wanted)}`` for each setting in which checkpoint ``state`` differs from
    ``wanted`` (``identity``); empty when the checkpoint may be resumed.

    ``iterations`` is the one training setting judged otherwise: with a constant learning rate it
    only says where training stops, so a checkpoint may go on to a longer or shorter budget, but
    never from a step past the wanted end (its weights would be recorded as that budget's).
    """
    state = state if isinstance(state, dict) else {}
    found = {}
    model = state.get("model_config") or {"name": state.get("model_name")}  # older checkpoints recorded the name only
    for key, want in wanted["model_config"].items():
        if key in model and model[key] != want:
            found[f"model.{key}"] = (model[key], want)
    for key in ("seeds", "sigmas"):
        if state.get(key) != wanted[key]:
            found[key] = (state.get(key), wanted[key])
    stored = state.get("train_config") or {}
    for key, want in wanted["train_config"].items():
        if key in MAY_DIFFER or key == "iterations":
            continue
        if stored.get(key) != want:
            found[key] = (stored.get(key), want)
    step, end = state.get("step"), wanted["train_config"]["iterations"]
    if not isinstance(step, int) or step > end:
        found["step"] = (step, f"at most iterations={end}")
    return found


def check(state: dict, wanted: dict, source: str, remedy: str = "delete it to start over") -> None:
    """CheckpointError naming ``source``, every differing setting (stored and wanted) and the remedy."""
    found = differences(state, wanted)
    if found:
        listed = "; ".join(f"{key} {stored!r} (wanted {want!r})" for key, (stored, want) in found.items())
        raise CheckpointError(f"{source} was trained with other settings: {listed}; {remedy}")


def load_state_dict(trainer: Trainer, state: dict, source: str = "checkpoint") -> None:
    """CheckpointError for a checkpoint trained with other settings (``differences``)."""
    check(state, identity(trainer.model_cfg, trainer.cfg, trainer.seeds, trainer.sigmas), source)
    trainer.model.load_state_dict(state["model"])
    trainer.opt.load_state_dict(state["optimizer"])
    trainer.step, trainer.losses = state["step"], [tuple(x) for x in state["losses"]]
    trainer.evaluations = [tuple(x) for x in state.get("evaluations", [])]  # a checkpoint written before test curves has none
    trainer.stepper.restart(trainer.step)


def write(obj, path: str | Path, name: str | Path | None = None) -> None:
    """``torch.save`` through a Python file: a write that fails (a full disk) raises the OSError
    behind it, naming ``name`` (default ``path``), where torch's own writer says only
    'enforce fail at inline_container.cc: unexpected pos'."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__context__  # the file's error, which torch's writer ran into
        if not isinstance(cause, OSError) or cause.errno is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(name or path)) from exc


def save(trainer: Trainer, path: str | Path) -> Path:
    """Write a checkpoint atomically (temporary file, then rename); OSError naming ``path`` when it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(state_dict(trainer), tmp, name=path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a part written to a full disk holds space the run needs
    return path


def read(path: str | Path, device: str | torch.device = "cpu", remedy: str = "delete it to start over") -> dict:
    """A checkpoint's state; a damaged file raises CheckpointError naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); {remedy}") from exc


def load(trainer: Trainer, path: str | Path) -> None:
    """Resume from a checkpoint; a damaged one, or one of other settings, raises CheckpointError naming it."""
    load_state_dict(trainer, read(path, trainer.device), f"checkpoint {path}")
