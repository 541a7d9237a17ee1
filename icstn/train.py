"""Training and evaluation of K models of one variant at once (seeds and noise levels).

Model k draws its weights, its batches and its perturbations from its own seed, and the loss
is the sum of the per-model losses, so each model trains exactly as it would alone: K is a
matter of speed, not of results.

The fast path (the default) is that plus, on CUDA: the data resident on the device, TF32, and
the whole step (batch and noise sampling, forward, backward, SGD update) captured once in a CUDA
graph and replayed, so that a step costs one launch instead of hundreds. Batches and noise come
from ``icstn.rng`` (a function of seed and step), which makes that possible and makes every
device draw the same numbers. ``TrainConfig(cuda_graph=False, tf32=False)`` is the plain path.

    trainer = Trainer(get_config("mnist", "IC-STN-4(a)"), TrainConfig(iterations=1000), data,
                      seeds=[0, 1], sigmas=[3.5, 3.5])
    trainer.fit()
    trainer.evaluate()   # one dict of metrics per model

``fit(stop=...)`` checks a stop condition between steps (a wall-clock limit): when it holds, the
trainer checkpoints through its callbacks and raises ``Stopped``; loading that checkpoint continues
exactly. A trainer loaded from a finished run of fewer iterations continues it to its own budget,
as exactly (``extends``).

The trainer runs the fit loop and its callbacks; its parts are a ``Sampler`` (what every model
sees, ``icstn.sampling``), a ``TrainStep`` (the step, and its CUDA graph, ``icstn.step``), an
``Evaluator`` (``icstn.evaluate``) and its checkpoints (``icstn.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from icstn import checkpoint, noise
from icstn.data import Dataset
from icstn.evaluate import Evaluator
from icstn.models import AlignNet, ModelConfig, check_noise
from icstn.sampling import Sampler
from icstn.step import TrainStep


@dataclass
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 100
    lr_geometric: float = 1e-4
    lr_classifier: float = 1e-2
    noise_warp: str = "homography"  # family of the perturbations; the model's family must contain it
    log_every: int = 50  # training-loss points for the curve
    eval_every: int = 0  # 0: evaluate at the end only
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    eval_seed: int = 0  # the fixed test perturbation
    eval_batch: int = 500
    planar_test_samples: int = 1000  # test perturbations of the single planar image
    cuda_graph: bool = True  # CUDA only: capture the whole step once, replay it
    tf32: bool = True  # CUDA only: TF32 matmuls and convolutions


def extends(done_iterations: int, cfg: TrainConfig) -> bool:
    """Whether a finished run of ``done_iterations`` steps, with ``cfg``'s other settings, is exactly the
    first ``done_iterations`` steps of a run of ``cfg``: so loading its final state and training on
    gives what ``cfg`` gives from scratch.

    Every draw is a function of (seed, step), and the learning rates are constant (this trainer has
    no schedule), so any shorter budget qualifies. A schedule whose decay point follows the budget
    would qualify only while that point lies beyond ``done_iterations``.
    """
    return 0 < done_iterations < cfg.iterations


class Stopped(Exception):
    """``fit`` was told to stop before its last step; its state at ``step`` went to ``on_checkpoint``."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}")
        self.step = step


class Callback:
    """Hooks the pipeline attaches (MLflow, Ray Tune); every method is optional."""

    def on_log(self, trainer: Trainer, step: int, losses: list[float]) -> None: ...

    def on_eval(self, trainer: Trainer, step: int, results: list[dict]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, step: int) -> None: ...


class Trainer:
    """Trains K = len(seeds) models of variant ``model_cfg``; model k uses seeds[k], sigmas[k]."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        data: Dataset,
        seeds: list[int],
        sigmas: list[float],
        device: str | torch.device = "cpu",
        callbacks: tuple[Callback, ...] = (),
    ):
        if len(seeds) != len(sigmas) or not seeds:
            raise ValueError(f"need one sigma per seed, got {len(seeds)} seeds and {len(sigmas)} sigmas")
        noise.check_sigma(sigmas)
        check_noise(model_cfg, cfg.noise_warp)
        self.model_cfg, self.cfg, self.callbacks = model_cfg, cfg, callbacks
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.seeds, self.sigmas = list(seeds), list(sigmas)
        self.model = AlignNet(model_cfg, self.seeds).to(self.device)
        groups = self.model.param_groups()
        self.opt = torch.optim.SGD(
            [
                {"params": groups["geometric"], "lr": cfg.lr_geometric},
                {"params": groups["classifier"], "lr": cfg.lr_classifier},
            ]
        )
        self.sampler = Sampler(model_cfg, cfg.noise_warp, self.data, self.seeds, self.sigmas, self.device)
        self.stepper = TrainStep(self.model, self.opt, self.sampler, cfg.batch_size, cfg.cuda_graph, cfg.tf32)
        self.evaluator = Evaluator(self.model, self.sampler, cfg.eval_seed, cfg.planar_test_samples, cfg.eval_batch)
        self.step = 0
        self.losses: list[tuple[int, list[float]]] = []  # the training-loss curve

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def graphed(self) -> bool:
        """Whether the step is captured in a CUDA graph."""
        return self.stepper.graphed

    # --- training -------------------------------------------------------------------------
    def sample_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The current step's batch of every model: source (K, B, C, H, W), labels (K, B), p (K, B, D)."""
        return self.sampler.batch(self.stepper.step_t, self.cfg.batch_size)

    def train_step(self) -> torch.Tensor:
        """One SGD step of every model; returns the per-model losses (K,) (with a CUDA graph, its
        output, overwritten by the next step: copy it to keep it)."""
        losses = self.stepper()
        self.step += 1
        return losses

    def fit(self, progress: bool = False, stop: Callable[[int], bool] | None = None) -> list[dict]:
        """Train to ``cfg.iterations`` (from the current step) and return the final evaluation.

        ``stop(step)`` is asked before every step: when it says True, every ``on_checkpoint`` callback
        runs at the current step and ``Stopped`` is raised.
        """
        from tqdm.auto import tqdm

        cfg = self.cfg
        # a run continued from a shorter one keeps the loss points of its own spacing: the curve it would have from scratch
        self.losses = [point for point in self.losses if point[0] % cfg.log_every == 0]
        bar = tqdm(total=cfg.iterations, initial=self.step, disable=not progress, desc=self.model_cfg.name, unit="it", mininterval=2)
        while self.step < cfg.iterations:
            if stop is not None and stop(self.step):
                bar.close()
                for cb in self.callbacks:
                    cb.on_checkpoint(self, self.step)
                raise Stopped(self.step)
            losses = self.train_step()
            bar.update()
            if self.step % cfg.log_every == 0 or self.step == cfg.iterations:
                values = losses.tolist()
                if any(v != v for v in values):  # NaN: a diverged model is data, keep going
                    bar.write(f"step {self.step}: a model diverged (loss NaN)")
                self.losses.append((self.step, values))
                bar.set_postfix(loss=f"{sum(values) / len(values):.4f}")
                for cb in self.callbacks:
                    cb.on_log(self, self.step, values)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.iterations:
                self._evaluated(self.evaluate())
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                for cb in self.callbacks:
                    cb.on_checkpoint(self, self.step)
        bar.close()
        results = self.evaluate()
        self._evaluated(results)
        return results

    def _evaluated(self, results: list[dict]) -> None:
        for cb in self.callbacks:
            cb.on_eval(self, self.step, results)

    # --- evaluation (icstn.evaluate) ------------------------------------------------------
    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (N,) and fixed perturbations (K, N, D) of the test set, from ``eval_seed``."""
        return self.evaluator.test_set()

    def evaluate(self, n_warps: int | None = None) -> list[dict]:
        """Test metrics of every model on the fixed perturbation, one dict per model (see Evaluator)."""
        return self.evaluator.evaluate(n_warps)

    def alignment(self, n: int, n_warps: int | None = None) -> torch.Tensor:
        """The first n test samples through the warps: (K, T, n, C, S, S), T = 1 + warps applied."""
        return self.evaluator.alignment(n, n_warps)

    def class_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and variance of the final aligned test images, each (K, classes, C, S, S)."""
        return self.evaluator.class_moments()

    # --- checkpoints (icstn.checkpoint) ---------------------------------------------------
    def state_dict(self) -> dict:
        return checkpoint.state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        checkpoint.load_state_dict(self, state)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (temporary file, then rename)."""
        return checkpoint.save(self, path)

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint; a corrupt file raises ValueError naming it."""
        checkpoint.load(self, path)
