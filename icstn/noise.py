"""The paper's perturbation model: Gaussian corner noise in pixels -> warp parameters.

The four corners of the ground-truth box each move by i.i.d. Gaussian noise of standard
deviation sigma pixels, plus one translation drawn from the same Gaussian and shared by all four
corners. The warp fitted to the moved corners (exact for a homography, least squares otherwise)
is the perturbation. Pixels are those of the *output* sample (e.g. 28 for MNIST, 36 for GTSRB,
50 for the planar experiment); one canonical unit is (S - 1) / 2 pixels (align_corners=True).
"""

from __future__ import annotations

import torch

from icstn import rng, warps


def px_to_canonical(sigma_px: float | torch.Tensor, size: int) -> float | torch.Tensor:
    """Pixels of an output side of ``size`` pixels to canonical units (align_corners=True)."""
    return sigma_px * 2 / (size - 1)


def unit_noise(seeds: torch.Tensor, step, n: int, salt: int) -> torch.Tensor:
    """Standard-normal corner displacements, translation included: (K, n, 4, 2).

    Model k's draw comes from ``icstn.rng`` (seeds[k], step, salt): 4 corner offsets plus one
    translation shared by the four corners, per sample. Scale by sigma to get displacements.
    """
    z = rng.normal(seeds, step, (n, 5, 2), salt)  # (K, n, 5, 2)
    return z[:, :, :4] + z[:, :, 4:]


def corners_to_params(displacement: torch.Tensor, warp: str) -> torch.Tensor:
    """Fit warp parameters to displaced canonical box corners (no solver: see ``warps.fit_corners``).

    Args:
        displacement: (B, 4, 2) corner offsets in canonical units.
    Returns:
        (B, D) parameters p with M(p) @ corner ~= corner + displacement.
    """
    return warps.fit_corners(warps.canonical_corners(displacement.dtype, displacement.device) + displacement, warp)


def check_sigma(sigma_px) -> None:
    values = torch.as_tensor(sigma_px, dtype=torch.float64).flatten().tolist()
    bad = [s for s in values if not s >= 0]
    if bad:
        raise ValueError(f"noise sigma must be >= 0 pixels, got {bad[0]}")


def perturb(n: int, sigma_px: float, size: int, warp: str, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Draw n perturbation warps of the paper's noise model.

    Args:
        n: number of warps.
        sigma_px: noise standard deviation in pixels of the output sample (>= 0).
        size: side of the output sample in pixels.
        warp: warp family to fit.
        seed: the draw's seed (``icstn.rng``: the same warps on every device).
    Returns:
        (n, D) warp parameters, on ``device``.
    """
    check_sigma(sigma_px)
    warps.check_warp(warp)
    z = unit_noise(torch.tensor([seed], device=device), 0, n, rng.TEST)[0]  # (n, 4, 2)
    return corners_to_params(px_to_canonical(sigma_px, size) * z, warp)
