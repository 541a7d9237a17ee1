"""What every model sees: source images and perturbation warps, drawn from (seed, step, index).

Model k draws from seeds[k] through ``icstn.rng`` whatever the number of models K, the same
numbers on any device; the step is a device tensor, so that a CUDA graph replays the draw.
"""

from __future__ import annotations

import torch

from icstn import experiments, noise, rng, warps
from icstn.data import Dataset
from icstn.models import ModelConfig


class Sampler:
    """Batches and perturbations of K models of one variant; model k uses seeds[k] and sigmas[k] (pixels)."""

    def __init__(self, model_cfg: ModelConfig, noise_warp: str, data: Dataset, seeds: list[int], sigmas: list[float], device):
        self.model_cfg, self.noise_warp, self.data = model_cfg, noise_warp, data
        self.device = torch.device(device)
        self.seed_t = torch.tensor(seeds, dtype=torch.long, device=self.device)  # (K,)
        self.sigma_units = torch.tensor([noise.px_to_canonical(s, model_cfg.size) for s in sigmas], device=self.device)  # (K,)
        self.alignment = experiments.is_alignment(model_cfg.experiment)  # one source image, no labels

    @property
    def k(self) -> int:
        return len(self.seed_t)

    def perturbations(self, z: torch.Tensor) -> torch.Tensor:
        """Unit corner noise (K, B, 4, 2) -> perturbation warps (K, B, D) in the model's family."""
        disp = self.sigma_units.view(-1, 1, 1, 1) * z
        p = noise.corners_to_params(disp.flatten(0, 1), self.noise_warp)
        if self.noise_warp != self.model_cfg.warp:
            p = warps.mat2vec(warps.vec2mat(p, self.noise_warp), self.model_cfg.warp)
        return p.view(*z.shape[:2], -1)

    def source(self, images: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Float source images for indices idx (K, B) -> (K, B, C, H, W); the one image (idx None): (1, 1, C, H, W)."""
        if idx is None:  # every sample warps the same source
            return self.data.images(images[:1]).unsqueeze(0)
        return self.data.images(images[idx])

    def batch(self, step: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Step ``step``'s batch of every model: source (K, B, C, H, W), labels (K, B), p (K, B, D).

        An alignment experiment draws perturbations only: its source is the one image
        (1, 1, C, H, W) and it has no labels (None).
        """
        z = noise.unit_noise(self.seed_t, step, size, rng.NOISE)  # (K, B, 4, 2)
        if self.alignment:
            return self.source(self.data.train_images, None), None, self.perturbations(z)
        idx = rng.randint(len(self.data.train_labels), self.seed_t, step, (size,), rng.BATCH)  # (K, B), with replacement
        return self.source(self.data.train_images, idx), self.data.train_labels[idx], self.perturbations(z)

    def test_set(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (N,) and fixed perturbations (K, N, D) of the test set: N = n perturbations of the
        one image for alignment, else the whole test set. Every model sees the same unit noise,
        scaled by its own sigma."""
        n = n if self.alignment else len(self.data.test_labels)
        z = noise.unit_noise(torch.tensor([seed], device=self.device), 0, n, rng.TEST).expand(self.k, -1, -1, -1)  # (K, N, 4, 2)
        idx = torch.zeros(n, dtype=torch.long, device=self.device) if self.alignment else torch.arange(n, device=self.device)
        return idx, self.perturbations(z)
