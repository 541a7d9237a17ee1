"""Image mosaics, shared by a trial's artifacts (its alignment PNG) and the report's figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_display(images: np.ndarray) -> np.ndarray:
    """(..., C, H, W) float images -> (..., H, W, C) in [0, 1], each image stretched to its range."""
    x = np.moveaxis(np.asarray(images, dtype=np.float32), -3, -1)
    lo = x.min(axis=(-3, -2, -1), keepdims=True)
    hi = x.max(axis=(-3, -2, -1), keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-8)


def tile(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """(R, Q, C, H, W) -> one (R*(H+pad), Q*(W+pad), C) mosaic, white gutters."""
    x = to_display(images)
    r, q, h, w, c = x.shape
    out = np.ones((r * (h + pad) + pad, q * (w + pad) + pad, c), np.float32)
    for i in range(r):
        for j in range(q):
            out[pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w] = x[i, j]
    return out


def save_image_grid(path: str | Path, images: np.ndarray, scale: int = 3) -> None:
    """Write a (R, Q, C, H, W) grid of images as a PNG, pixels enlarged ``scale`` times."""
    import matplotlib.pyplot as plt

    mosaic = tile(images).repeat(scale, 0).repeat(scale, 1)
    plt.imsave(str(path), mosaic.squeeze(-1) if mosaic.shape[-1] == 1 else mosaic, cmap="gray", vmin=0, vmax=1)
