"""Prepared datasets -> tensors. No downloading here (see ``pipeline.fetch`` / ``pipeline.prepare``).

A prepared dataset is a folder ``<root>/<name>/`` holding ``manifest.json`` and uint8 arrays:
``train_images.npy`` (N, C, H, W), ``train_labels.npy`` (N,), ``test_images.npy``,
``test_labels.npy``. The planar experiment has one image: its train and test "sets" are that
image, and every sample is a new perturbation of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from icstn import experiments, warps

SPLITS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass
class Dataset:
    """Images stay uint8 (and on the training device); ``images()`` makes float batches.

    Attributes:
        train_images, test_images: (N, C, H, W) uint8.
        train_labels, test_labels: (N,) int64.
        ref: (3, 3) ``src_from_box`` matrix from the sample's canonical square to the source
            image, or None when the sample is the whole image.
        normalize: 'unit' (x / 255) or 'standardize' (per image and channel, as the released
            traffic-sign code).
        manifest: the prepared manifest (provenance).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    ref: torch.Tensor | None
    normalize: str
    manifest: dict

    @property
    def num_classes(self) -> int:
        return int(self.manifest.get("num_classes", 0))

    def images(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 (..., C, H, W) -> float32 network input of the same shape."""
        x = raw.float()
        if self.normalize == "unit":
            return x / 255
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1.0)  # flat images: avoid / 0
        return (x - mean) / std

    def to(self, device: torch.device | str) -> Dataset:
        move = {k: getattr(self, k).to(device) for k in SPLITS}
        return replace(self, **move, ref=None if self.ref is None else self.ref.to(device))

    def holdout(self, n_val: int, seed: int) -> Dataset:
        """Carve a validation split of n_val training images; it becomes the 'test' split.

        Used for hyper-parameter search, so that the real test set is never looked at.
        """
        n = len(self.train_labels)
        if not 0 < n_val < n:
            raise ValueError(f"validation size must be in (0, {n}), got {n_val}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.train_labels.device)
        val, train = perm[:n_val], perm[n_val:]
        return replace(
            self,
            train_images=self.train_images[train],
            train_labels=self.train_labels[train],
            test_images=self.train_images[val],
            test_labels=self.train_labels[val],
            manifest={**self.manifest, "split": f"validation holdout of {n_val} (seed {seed})"},
        )

    def subsample_test(self, n: int | None, seed: int = 0) -> Dataset:
        """A fixed, seeded subset of n test images (None or >= size: all of them)."""
        if n is None or n >= len(self.test_labels):
            return self
        idx = torch.randperm(len(self.test_labels), generator=torch.Generator().manual_seed(seed))[:n]
        idx = idx.sort().values.to(self.test_labels.device)
        return replace(self, test_images=self.test_images[idx], test_labels=self.test_labels[idx])


def read_manifest(root: str | Path, name: str) -> dict:
    path = Path(root) / name / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"prepared dataset {name!r} not found: {path} is missing. Run `python -m pipeline.prepare {name}` "
            "(or the workflow's prepare rule) first."
        )
    return json.loads(path.read_text())


def check(root: str | Path, name: str) -> dict:
    """The manifest of prepared dataset ``name``, once every array is there and whole (it reads their
    headers only); FileNotFoundError or ValueError naming the file and what to do otherwise."""
    manifest = read_manifest(root, name)
    for split in SPLITS:
        _array(root, name, split, mmap_mode="r")
    return manifest


def _array(root: str | Path, name: str, split: str, mmap_mode: str | None = None):
    """One prepared array (``mmap_mode='r'``: its header only), or an error that says what to do."""
    import numpy as np  # here only: the rest of icstn needs nothing but torch

    path = Path(root) / name / f"{split}.npy"
    again = f"delete {path.parent} and run the workflow again (or python -m pipeline.prepare {name} --force)"
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset {name!r} is incomplete: {path} is missing; {again}")
    try:
        return np.load(path, mmap_mode=mmap_mode)  # a cut file fails here: its header says more than it holds
    except (ValueError, OSError) as exc:
        raise ValueError(f"prepared dataset {name!r} is damaged: {path} ({exc}); {again}") from None


def load(root: str | Path, name: str) -> Dataset:
    """Load prepared dataset ``name`` ('mnist', 'gtsrb' or 'planar') from ``root``."""
    import numpy as np

    manifest = read_manifest(root, name)
    arrays = {}
    for split in SPLITS:
        arr = _array(root, name, split)
        arrays[split] = torch.from_numpy(arr.astype(np.int64) if "labels" in split else arr)
    ref = None
    if "box" in manifest:  # the sample is a box of the source image
        h, w = arrays["train_images"].shape[-2:]
        ref = warps.box_matrix(*manifest["box"], size=(h, w))
    return Dataset(name, **arrays, ref=ref, normalize=manifest.get("normalize", "unit"), manifest=manifest)


def synthetic(experiment: str, n: int = 2000, seed: int = 0) -> Dataset:
    """Random uint8 images and labels shaped like prepared dataset ``experiment``.

    For benchmarks and device checks: a step's cost does not depend on the pixels, and nothing
    needs fetching. An alignment experiment keeps its single image.
    """
    exp = experiments.get(experiment)
    lay = exp.layout
    n = 1 if exp.is_alignment else n
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, lay.channels, lay.height, lay.width), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, max(exp.num_classes, 1), (n,), generator=g)
    ref = warps.box_matrix(*lay.box, size=(lay.height, lay.width)) if lay.box else None
    test = slice(0, min(n, 200))
    manifest = {"num_classes": exp.num_classes, "synthetic": True}
    return Dataset(experiment, images, labels, images[test], labels[test], ref, lay.normalize, manifest)
