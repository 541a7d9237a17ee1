"""Counter-based random numbers: a pure function of (seed, stream, step, index).

Training draws its batches and perturbations from here rather than from ``torch.Generator``:

* K models need K independent streams, and one vectorised draw serves them all, whatever K;
* the step is a device tensor, so a CUDA graph that captures the draw advances it on replay;
* the numbers are integer arithmetic, identical on CPU and GPU: a trial sees the same batches
  and noise on any device.

The mixer is Wellons' ``lowbias32``, a bijective 32-bit hash, in int64 arithmetic that never
overflows. Uniforms carry 24 random bits (float32's mantissa); normals come from Box-Muller.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF
#: Salts that keep the draws of one step apart.
BATCH, NOISE, TEST = 0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35
CALIBRATION = 0x27D4EB2F  # the training draws of the closed-form baseline (icstn.evaluate)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), in two 16-bit halves so int64 cannot overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: an int64 tensor of values in [0, 2^32) to well-mixed values in [0, 2^32)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def bits(seeds: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    """32 random bits per element: model k's draw number ``step`` of stream ``salt``.

    Args:
        seeds: (K,) int64 seeds, one per model.
        step: 0-d int64 tensor (or int), the draw's counter.
        shape: shape of one model's draw.
    Returns:
        (K, *shape) int64 in [0, 2^32); row k depends on seeds[k] only, never on K.
    """
    key = hash32(hash32(seeds ^ salt) + hash32(torch.as_tensor(step, device=seeds.device)))  # (K,)
    index = torch.arange(math.prod(shape), device=seeds.device)
    return hash32(key[:, None] ^ hash32(index)).view(-1, *shape)


def uniform(seeds, step, shape, salt) -> torch.Tensor:
    """(K, *shape) float32 uniforms in the open interval (0, 1)."""
    return ((bits(seeds, step, shape, salt) >> 8).float() + 0.5) * 2.0**-24


def normal(seeds, step, shape, salt) -> torch.Tensor:
    """(K, *shape) float32 standard normals (Box-Muller on pairs of uniforms)."""
    u = uniform(seeds, step, (2, *shape), salt)  # (K, 2, *shape)
    return torch.sqrt(-2.0 * torch.log(u[:, 0])) * torch.cos(2 * math.pi * u[:, 1])


def randint(high: int, seeds, step, shape, salt) -> torch.Tensor:
    """(K, *shape) int64 uniform in [0, high); the modulo bias is below high / 2^32."""
    return bits(seeds, step, shape, salt) % high
