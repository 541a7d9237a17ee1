"""Evaluation of K models on a fixed, seeded perturbation of the test set (the same for every model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from icstn import metrics, noise, rng, warps
from icstn.models import AlignNet
from icstn.sampling import Sampler


class Evaluator:
    """Test metrics, alignment samples and class moments of ``model`` on ``sampler``'s test set.

    ``seed`` fixes the test perturbation; ``alignment_samples`` is how many perturbations of the
    one image an alignment experiment is tested on; ``batch`` is the evaluation batch.
    """

    def __init__(self, model: AlignNet, sampler: Sampler, seed: int, alignment_samples: int, batch: int):
        self.model, self.sampler = model, sampler
        self.seed, self.alignment_samples, self.batch = seed, alignment_samples, batch
        self._test = None

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (N,) and fixed perturbations (K, N, D) of the test set."""
        if self._test is None:
            self._test = self.sampler.test_set(self.alignment_samples, self.seed)
        return self._test

    def _batches(self, n_warps: int | None = None, keep_steps: bool = False):
        """Yield (indices (B,), perturbations (K, B, D), model output) over the test set."""
        idx, p_test = self.test_set()
        data, k = self.sampler.data, self.sampler.k
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(idx), self.batch):
                sl = slice(i, i + self.batch)
                source = self.sampler.source(data.test_images, None if self.sampler.alignment else idx[sl].expand(k, -1))
                yield idx[sl], p_test[:, sl], self.model(source, p_test[:, sl], data.ref, n_warps, keep_steps)
        self.model.train(was_training)

    def evaluate(self, n_warps: int | None = None) -> list[dict]:
        """Test metrics of every model, one dict per model.

        Classification: ``test_error`` (%) and ``test_loss`` (cross-entropy). Alignment:
        ``test_error`` is the mean corner error in pixels of the sample, ``baseline_error`` that
        of the unaligned input, ``test_loss`` the L2 warp-parameter error.
        """
        cfg, k = self.model.cfg, self.sampler.k
        names = ("test_error", "test_loss") + (("baseline_error",) if self.sampler.alignment else ())
        totals = {name: torch.zeros(k, dtype=torch.float64, device=self.sampler.device) for name in names}  # each (K,)
        count = 0
        for idx, p_init, out in self._batches(n_warps):
            if self.sampler.alignment:
                totals["test_error"] += metrics.corner_error_px(out.p, cfg.warp, cfg.size).sum(-1)
                totals["baseline_error"] += metrics.corner_error_px(p_init, cfg.warp, cfg.size).sum(-1)
                totals["test_loss"] += out.p.pow(2).sum(-1).sum(-1)
            else:
                labels = self.sampler.data.test_labels[idx]
                totals["test_error"] += metrics.errors(out.logits, labels) * 100.0
                totals["test_loss"] += F.cross_entropy(out.logits.flatten(0, 1), labels.repeat(k), reduction="none").view(k, -1).sum(-1)
            count += len(idx)
        means = {name: (total / count).tolist() for name, total in totals.items()}
        return [{name: means[name][i] for name in names} for i in range(k)]

    def alignment(self, n: int, n_warps: int | None = None) -> torch.Tensor:
        """The first n test samples through the warps: (K, T, n, C, S, S), T = 1 + warps applied."""
        batches = self._batches(n_warps, keep_steps=True)
        _, _, out = next(batches)
        batches.close()
        return torch.stack([s[:, :n] for s in out.steps], 1).cpu()

    def class_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and variance of the final aligned test images, each (K, classes, C, S, S)."""
        cfg = self.model.cfg
        moments = metrics.ClassMoments(self.sampler.k, cfg.num_classes, (cfg.channels, cfg.size, cfg.size), self.sampler.device)
        for idx, _, out in self._batches(keep_steps=True):
            moments.update(out.steps[-1], self.sampler.data.test_labels[idx])
        mean, var = moments.result()
        return mean.cpu(), var.cpu()

    def linear_baseline(self, k: int, n_train: int = 10_000, batch: int = 500, ridge: float = 1e-3) -> float:
        """Model k's calibration on an alignment task: the test error of the best one-step linear
        predictor, fitted in closed form on its own training distribution (seed k, sigma k).

        The predictor maps the perturbed sample's pixels (and a constant) to the update that would
        undo the perturbation, the inverse warp's parameters, by least squares with a small ridge;
        its update is composed with the perturbation as a c-STN-1's is. It shows how hard the
        task is: a c-STN-1 (one linear layer, one step) can at best approach it.
        """
        cfg, s = self.model.cfg, self.sampler
        if not s.alignment:
            raise ValueError(f"{cfg.name}: the linear baseline is for alignment experiments")
        source = s.source(s.data.train_images, None)[0]  # (1, C, H, W): the one image
        features = cfg.channels * cfg.size * cfg.size + 1

        def design(p: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, F): the warped sample's pixels, then 1
            x = warps.warp_image(source, p, cfg.warp, (cfg.size, cfg.size), s.data.ref).flatten(1)
            return torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1).double()

        xtx = torch.zeros(features, features, dtype=torch.float64, device=s.device)
        xty = torch.zeros(features, warps.WARP_DOF[cfg.warp], dtype=torch.float64, device=s.device)
        with torch.no_grad():
            for i in range(-(-n_train // batch)):
                z = noise.unit_noise(s.seed_t[k : k + 1], i, batch, rng.CALIBRATION)  # (1, B, 4, 2)
                p = s.perturbations(z.expand(s.k, -1, -1, -1))[k]  # (B, D), sigma k's scale
                x = design(p)
                xtx += x.T @ x
                xty += x.T @ warps.inverse(p, cfg.warp).double()
            xtx += ridge * xtx.diagonal().mean() * torch.eye(features, dtype=torch.float64, device=s.device)
            weights = torch.linalg.solve(xtx, xty)  # (F, D)
            _, p_test = self.test_set()
            total = 0.0
            for i in range(0, p_test.shape[1], self.batch):
                p0 = p_test[k, i : i + self.batch]  # (B, D)
                dp = (design(p0) @ weights).to(p0.dtype)
                total += metrics.corner_error_px(warps.compose(dp, p0, cfg.warp)[None], cfg.warp, cfg.size).sum().item()
        return total / p_test.shape[1]
