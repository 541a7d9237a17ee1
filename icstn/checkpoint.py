"""A trainer's state on disk: weights, optimiser, step, loss curve and test curve, written atomically.

Nothing else needs saving: every draw is a function of (seed, step), so a trainer loaded at step
s continues exactly as one that had trained through s.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from icstn.train import Trainer


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
    }


def load_state_dict(trainer: Trainer, state: dict) -> None:
    """ValueError for a checkpoint of another variant, seeds or noise levels."""
    if state["seeds"] != trainer.seeds or state["sigmas"] != trainer.sigmas or state["model_name"] != trainer.model_cfg.name:
        raise ValueError(
            f"checkpoint is of {state['model_name']} seeds {state['seeds']} sigmas {state['sigmas']}, "
            f"not {trainer.model_cfg.name} seeds {trainer.seeds} sigmas {trainer.sigmas}"
        )
    trainer.model.load_state_dict(state["model"])
    trainer.opt.load_state_dict(state["optimizer"])
    trainer.step, trainer.losses = state["step"], [tuple(x) for x in state["losses"]]
    trainer.evaluations = [tuple(x) for x in state.get("evaluations", [])]  # a checkpoint written before test curves has none
    trainer.stepper.restart(trainer.step)


def save(trainer: Trainer, path: str | Path) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state_dict(trainer), tmp)
    os.replace(tmp, path)
    return path


def load(trainer: Trainer, path: str | Path) -> None:
    """Resume from a checkpoint; a corrupt file raises ValueError naming it."""
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); delete it to start over") from exc
    load_state_dict(trainer, state)
