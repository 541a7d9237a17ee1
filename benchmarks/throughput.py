"""Training throughput of the paper's models: model-iterations per second, as JSON lines.

    python -m benchmarks.throughput --model "IC-STN-4(a)" --device cpu --modes eager batched --k 1 4

Every run first measures the in-run baseline, a single model trained eagerly (mode ``eager``,
k = 1), and reports each figure with its ratio to it: machines are noisy, ratios within one run
are not. Warm-up steps are excluded. Data are random uint8 images of the experiment's shape:
the step's cost does not depend on their content, and no dataset needs preparing.

Modes: ``eager`` (k separate single-model steps) and ``batched`` (k models in one stacked
step). The CUDA-graph modes of issue 6 are not implemented yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from icstn import models
from icstn.data import Dataset
from icstn.train import TrainConfig, Trainer

SHAPES = {"mnist": (1, 28, 28, 10, "unit", None), "gtsrb": (3, 50, 50, 43, "standardize", (7, 7, 43, 43))}


def synthetic(experiment: str, n: int = 2000) -> Dataset:
    from icstn import warps

    c, h, w, classes, normalize, box = SHAPES[experiment]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    ref = warps.box_matrix(*box, size=(h, w)) if box else None
    return Dataset(experiment, images, labels, images[:200], labels[:200], ref, normalize, {"num_classes": classes})


def measure(cfg, data, k: int, mode: str, device: str, steps: int, warmup: int) -> float:
    """Model-iterations per second of ``mode`` with k models."""
    train = TrainConfig(iterations=steps + warmup, batch_size=100)
    trainers = [Trainer(cfg, train, data, list(range(k)), [3.5] * k, device)] if mode == "batched" else [
        Trainer(cfg, train, data, [i], [3.5], device) for i in range(k)
    ]  # fmt: skip
    for _ in range(warmup):
        for t in trainers:
            t.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        for t in trainers:
            t.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return k * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=sorted(SHAPES), default="mnist")
    parser.add_argument("--model", default="IC-STN-4(a)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=["eager", "batched"], default=["eager", "batched"])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4], help="models per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = models.get_config(args.experiment, args.model)
    data = synthetic(args.experiment)
    base = measure(cfg, data, 1, "eager", args.device, args.steps, args.warmup)
    common = {"model": args.model, "device": args.device, "threads": torch.get_num_threads()}
    print(json.dumps({**common, "mode": "eager", "k": 1, "model_iters_per_s": round(base, 2), "ratio": 1.0, "baseline": True}))
    for mode in args.modes:
        for k in args.k:
            if mode == "eager" and k == 1:
                continue
            rate = measure(cfg, data, k, mode, args.device, args.steps, args.warmup)
            print(json.dumps({**common, "mode": mode, "k": k, "model_iters_per_s": round(rate, 2), "ratio": round(rate / base, 3)}))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
