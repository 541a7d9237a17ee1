"""Errors and aligned-appearance statistics, for K models at once."""

from __future__ import annotations

import torch

from icstn import warps


def errors(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Misclassified samples per model. logits (K, B, classes), labels (K, B) or (B,) -> (K,)."""
    return (logits.argmax(-1) != labels).sum(-1)


def corner_error_px(p: torch.Tensor, warp: str, size: int) -> torch.Tensor:
    """Mean distance, in pixels of the S x S sample, between the box corners under warp p and
    under the ground truth (the identity).

    This is the planar experiment's test error: the warp parameters themselves are not
    comparable across warp families, and the paper does not state its unit.

    Args:
        p: (K, B, D) final warps, in the sample's canonical frame.
    Returns:
        (K, B) errors in pixels.
    """
    corners = warps.canonical_corners(p.dtype, p.device)
    moved = warps.transform_points(warps.vec2mat(p.flatten(0, 1), warp), corners)  # (K*B, 4, 2)
    dist = (moved - corners).norm(dim=-1).mean(-1) * (size - 1) / 2
    return dist.view(p.shape[:2])


class ClassMoments:
    """Running per-class mean and variance of aligned images (Figures 9 and 11)."""

    def __init__(self, k: int, num_classes: int, shape: tuple[int, ...], device):
        self.count = torch.zeros(k, num_classes, device=device, dtype=torch.float64)
        self.sum = torch.zeros(k, num_classes, *shape, device=device, dtype=torch.float64)
        self.sq = torch.zeros_like(self.sum)

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """images (K, B, C, H, W), labels (B,)."""
        onehot = torch.nn.functional.one_hot(labels, self.count.shape[1]).to(torch.float64)  # (B, classes)
        x = images.to(torch.float64).flatten(2)  # (K, B, CHW)
        self.count += onehot.sum(0)
        self.sum += torch.einsum("bn,kbf->knf", onehot, x).view_as(self.sum)
        self.sq += torch.einsum("bn,kbf->knf", onehot, x * x).view_as(self.sum)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance, each (K, classes, C, H, W), float32 (0 for an empty class)."""
        n = self.count.clamp_min(1).view(*self.count.shape, *([1] * (self.sum.ndim - 2)))
        mean = self.sum / n
        var = (self.sq / n - mean * mean).clamp_min(0)
        return mean.float(), var.float()
