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
    trainer.evaluations  # the learning curve: the test metrics at eval_steps(...), the last at the end

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


def log_steps(iterations: int, per_decade: int) -> list[int]:
    """Steps 1 <= s < iterations spaced ``per_decade`` to a decade on a log scale: 10^(j / per_decade)
    rounded to the fewest significant digits that keep a decade's points apart (3: the 1-2-5 series
    1, 2, 5, 10, 20, 50, ...; 4: 1, 2, 3, 6, 10, ...), as integers.

    They do not depend on ``iterations``, so a longer run's points extend a shorter one's, and runs
    of any budget share their steps.

    >>> log_steps(300, 3)
    [1, 2, 5, 10, 20, 50, 100, 200]
    """
    if per_decade < 0:
        raise ValueError(f"curve_per_decade must be >= 0, got {per_decade}")
    if per_decade == 0:
        return []
    exact = [10 ** (j / per_decade) for j in range(per_decade)]  # a decade's mantissas in [1, 10)
    digits = next(d for d in range(1, 16) if len({round(m, d - 1) for m in [*exact, 10.0]}) == per_decade + 1)
    mantissas = [round(m, digits - 1) for m in exact]
    steps: set[int] = set()
    decade = 1
    while decade < iterations:
        steps |= {s for m in mantissas if (s := round(m * decade)) < iterations}
        decade *= 10
    return sorted(steps)


def eval_steps(iterations: int, per_decade: int, every: int = 0) -> list[int]:
    """Where a run of ``iterations`` steps evaluates on the test set: ``log_steps``, every
    ``every``-th step (if ``every``), and always the last.

    >>> eval_steps(300, 3, every=100)
    [1, 2, 5, 10, 20, 50, 100, 200, 300]
    """
    periodic = range(every, iterations, every) if every else ()
    return sorted({*log_steps(iterations, per_decade), *periodic, iterations})


@dataclass
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 100
    lr_geometric: float = 1e-4
    lr_classifier: float = 1e-2
    noise_warp: str = "homography"  # family of the perturbations; the model's family must contain it
    log_every: int = 50  # training-loss points for the curve
    curve_per_decade: int = 3  # test evaluations per decade of steps (eval_steps); 0: none but eval_every's
    eval_every: int = 0  # also evaluate every so many steps (0: no)
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
    would qualify only while that point lies beyond ``done_iterations`` (and ``icstn.checkpoint``,
    which lets a checkpoint's ``iterations`` differ on the same ground, would check it too).
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
        self.evaluations: list[tuple[int, list[dict]]] = []  # the test curve: (step, one dict of metrics per model)

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
        evals = set(eval_steps(cfg.iterations, cfg.curve_per_decade, cfg.eval_every))
        # a run continued from a shorter one keeps the points of its own schedule: the same curves as from scratch
        self.evaluations = [e for e in self.evaluations if e[0] in evals]
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
            if self.step in evals and self.step < cfg.iterations:  # the last: below, whatever the schedule
                self._evaluated(self.evaluate())
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                for cb in self.callbacks:
                    cb.on_checkpoint(self, self.step)
        bar.close()
        results = self.evaluate()
        self._evaluated(results)
        return results

    def _evaluated(self, results: list[dict]) -> None:
        if self.evaluations and self.evaluations[-1][0] == self.step:
            self.evaluations.pop()  # evaluated again at the same step (a resumed run's last): one point per step
        self.evaluations.append((self.step, [dict(r) for r in results]))  # copies: a caller may add to its results
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
