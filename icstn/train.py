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
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from icstn import metrics, noise, rng, warps
from icstn.data import Dataset
from icstn.models import AlignNet, ModelConfig, check_noise


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


#: Eager steps before a CUDA graph is captured (cuDNN autotuning and lazy initialisation).
GRAPH_WARMUP = 3


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
        self._seed_t = torch.tensor(self.seeds, dtype=torch.long, device=self.device)  # (K,)
        self._step_t = torch.zeros((), dtype=torch.long, device=self.device)  # the graph advances it
        self.sigma_units = torch.tensor([noise.px_to_canonical(s, model_cfg.size) for s in sigmas], device=self.device)  # (K,)
        self.step = 0
        self.losses: list[tuple[int, list[float]]] = []  # the training-loss curve
        self._test = None
        self.graphed = self.device.type == "cuda" and cfg.cuda_graph
        self._graph, self._graph_losses, self._warm = None, None, 0

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def planar(self) -> bool:
        return self.model_cfg.classifier is None

    # --- data -----------------------------------------------------------------------------
    def _perturbations(self, z: torch.Tensor) -> torch.Tensor:
        """Unit corner noise (K, B, 4, 2) -> perturbation warps (K, B, D) in the model's family."""
        disp = self.sigma_units.view(-1, 1, 1, 1) * z
        p = noise.corners_to_params(disp.flatten(0, 1), self.cfg.noise_warp)
        if self.cfg.noise_warp != self.model_cfg.warp:
            p = warps.mat2vec(warps.vec2mat(p, self.cfg.noise_warp), self.model_cfg.warp)
        return p.view(*z.shape[:2], -1)

    def _source(self, images: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Float source images for indices idx (K, B) -> (K, B, C, H, W); the planar image (idx None): (1, 1, C, H, W)."""
        if idx is None:  # every sample warps the same source
            return self.data.images(images[:1]).unsqueeze(0)
        return self.data.images(images[idx])

    def sample_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The current step's batch of every model: source (K, B, C, H, W), labels (K, B), p (K, B, D).

        The planar experiment draws perturbations only: its source is the one image (1, 1, C, H, W)
        and it has no labels (None).
        """
        b = self.cfg.batch_size
        z = noise.unit_noise(self._seed_t, self._step_t, b, rng.NOISE)  # (K, B, 4, 2)
        if self.planar:
            return self._source(self.data.train_images, None), None, self._perturbations(z)
        idx = rng.randint(len(self.data.train_labels), self._seed_t, self._step_t, (b,), rng.BATCH)  # (K, B), with replacement
        return self._source(self.data.train_images, idx), self.data.train_labels[idx], self._perturbations(z)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (N,) and fixed perturbations (K, N, D) of the test set, from ``eval_seed``.

        Every model sees the same unit noise, scaled by its own sigma.
        """
        if self._test is None:
            n = self.cfg.planar_test_samples if self.planar else len(self.data.test_labels)
            seed = torch.tensor([self.cfg.eval_seed], device=self.device)
            z = noise.unit_noise(seed, 0, n, rng.TEST).expand(self.k, -1, -1, -1)  # (K, N, 4, 2)
            idx = torch.zeros(n, dtype=torch.long, device=self.device) if self.planar else torch.arange(n, device=self.device)
            self._test = idx, self._perturbations(z)
        return self._test

    # --- training -------------------------------------------------------------------------
    def loss(self, out, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-model loss (K,): cross-entropy, or for planar the L2 warp-parameter error."""
        if self.planar:
            return out.p.pow(2).sum(-1).mean(-1)  # the ground truth is the identity, p = 0
        return F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), reduction="none").view(self.k, -1).mean(-1)

    def _step(self) -> torch.Tensor:
        """Sample, forward, backward, update: static shapes and no host sync, so that a CUDA graph
        can capture it. Gradients must be None before it (zero_grad(set_to_none=True))."""
        source, labels, p = self.sample_batch()
        losses = self.loss(self.model(source, p, self.data.ref), labels)
        losses.sum().backward()  # models share no weights: each gets its own gradient
        self.opt.step()
        self._step_t += 1
        return losses.detach()

    def train_step(self) -> torch.Tensor:
        """One SGD step of every model; returns the per-model losses (K,).

        With a CUDA graph, the first GRAPH_WARMUP steps run eagerly on a side stream, the next
        one captures the step, and every step replays it. The returned tensor is then the
        graph's output, overwritten by the next step: copy it to keep it.
        """
        if self._graph is None:
            self._set_precision()  # a replay keeps what its capture had
        if self.graphed and self._graph is None and self._warm >= GRAPH_WARMUP:
            self._capture()
        if self._graph is not None:
            self._graph.replay()
            losses = self._graph_losses
        else:
            with self._warmup_stream():
                self.opt.zero_grad(set_to_none=True)
                losses = self._step()
            self._warm += 1
        self.step += 1
        return losses

    def _set_precision(self) -> None:
        """This trainer's float32 precision on CUDA (process-wide flags, so set before its steps)."""
        if self.device.type == "cuda":
            precision = "tf32" if self.cfg.tf32 else "ieee"
            torch.backends.cuda.matmul.fp32_precision = precision
            torch.backends.cudnn.conv.fp32_precision = precision
            torch.backends.cudnn.benchmark = True  # static shapes: autotune each convolution once

    @contextlib.contextmanager
    def _warmup_stream(self):
        """Eager steps before a capture run on a side stream, as CUDA graphs require."""
        if not self.graphed:
            yield
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)  # backward in the capture allocates static gradients
        try:
            with torch.cuda.graph(graph):
                self._graph_losses = self._step()
        except RuntimeError as exc:
            raise RuntimeError(
                f"capturing the {self.model_cfg.name} training step in a CUDA graph failed ({exc}); "
                "TrainConfig(cuda_graph=False) (the workflow's config key cuda_graph: false) trains it eagerly, with the same results"
            ) from exc
        self._graph = graph

    def fit(self, progress: bool = False) -> list[dict]:
        """Train to ``cfg.iterations`` (from the current step) and return the final evaluation."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.iterations, initial=self.step, disable=not progress, desc=self.model_cfg.name, unit="it", mininterval=2)
        while self.step < cfg.iterations:
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

    # --- evaluation -----------------------------------------------------------------------
    def _test_batches(self, n_warps: int | None = None, keep_steps: bool = False):
        """Yield (indices (B,), model output) over the fixed test perturbation."""
        idx, p_test = self.test_set()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(idx), self.cfg.eval_batch):
                sl = slice(i, i + self.cfg.eval_batch)
                source = self._source(self.data.test_images, None if self.planar else idx[sl].expand(self.k, -1))
                yield idx[sl], p_test[:, sl], self.model(source, p_test[:, sl], self.data.ref, n_warps, keep_steps)
        self.model.train(was_training)

    def evaluate(self, n_warps: int | None = None) -> list[dict]:
        """Test metrics of every model on the fixed perturbation, one dict per model.

        Classification: ``test_error`` (%). Planar: ``test_error`` is the mean corner error in
        pixels of the 50x50 sample, with ``baseline_error`` that of the unaligned input.
        """
        totals = torch.zeros(3, self.k, dtype=torch.float64, device=self.device)
        count = 0
        for idx, p_init, out in self._test_batches(n_warps):
            if self.planar:
                size, warp = self.model_cfg.size, self.model_cfg.warp
                totals[0] += metrics.corner_error_px(out.p, warp, size).sum(-1)
                totals[1] += metrics.corner_error_px(p_init, warp, size).sum(-1)
                totals[2] += out.p.pow(2).sum(-1).sum(-1)
            else:
                labels = self.data.test_labels[idx]
                totals[0] += metrics.errors(out.logits, labels) * 100.0
                totals[2] += F.cross_entropy(out.logits.flatten(0, 1), labels.repeat(self.k), reduction="none").view(self.k, -1).sum(-1)
            count += len(idx)
        totals /= count
        results = []
        for k in range(self.k):
            row = {"test_error": totals[0, k].item(), "test_loss": totals[2, k].item()}
            if self.planar:
                row["baseline_error"] = totals[1, k].item()
            results.append(row)
        return results

    def alignment(self, n: int, n_warps: int | None = None) -> torch.Tensor:
        """The first n test samples through the warps: (K, T, n, C, S, S), T = 1 + warps applied."""
        batches = self._test_batches(n_warps, keep_steps=True)
        _, _, out = next(batches)
        batches.close()
        return torch.stack([s[:, :n] for s in out.steps], 1).cpu()

    def class_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and variance of the final aligned test images, each (K, classes, C, S, S)."""
        s = self.model_cfg.size
        moments = metrics.ClassMoments(self.k, self.model_cfg.num_classes, (self.model_cfg.channels, s, s), self.device)
        for idx, _, out in self._test_batches(keep_steps=True):
            moments.update(out.steps[-1], self.data.test_labels[idx])
        mean, var = moments.result()
        return mean.cpu(), var.cpu()

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "seeds": self.seeds,
            "sigmas": self.sigmas,
            "losses": self.losses,
            "train_config": asdict(self.cfg),
            "model_name": self.model_cfg.name,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["seeds"] != self.seeds or state["sigmas"] != self.sigmas or state["model_name"] != self.model_cfg.name:
            raise ValueError(
                f"checkpoint is of {state['model_name']} seeds {state['seeds']} sigmas {state['sigmas']}, "
                f"not {self.model_cfg.name} seeds {self.seeds} sigmas {self.sigmas}"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.losses = state["step"], [tuple(x) for x in state["losses"]]
        self._step_t.fill_(self.step)  # the draws are a function of the step: nothing else to restore
        self._graph, self._warm = None, 0  # capture again, with what was loaded

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint; a corrupt file raises ValueError naming it."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # torch raises several types for a damaged file
            raise ValueError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); delete it to start over") from exc
        self.load_state_dict(state)
