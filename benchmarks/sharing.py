"""Trials sharing one device: P processes, each training K models, against one process.

    python -m benchmarks.sharing --model "IC-STN-4(a)" --k 3 --processes 1 4 [--label mps]

Each process builds its trial (the device's fast path: stacked models, on CUDA the whole step
one CUDA-graph replay), warms up past the capture, waits at a barrier for the others, then
trains for ``--seconds`` of wall time. The figure is the sum over processes of
model-iterations per second, and its ratio to the one-process figure of the same run. With
``nvidia-cuda-mps-control -d`` running, the same command measures the processes under MPS;
``--label`` records which.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time

CHUNK = 10  # steps between clock reads: reading the clock on CUDA means a synchronize


def worker(args, barrier, results) -> None:
    import torch

    from benchmarks.throughput import FAST_PATH, trainers_for
    from icstn import models
    from icstn.data import synthetic
    from icstn.step import GRAPH_WARMUP

    cuda = args.device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)
    cfg = models.get_config(args.experiment, args.model)
    (trainer,) = trainers_for(cfg, synthetic(args.experiment), args.k, FAST_PATH["cuda" if cuda else "cpu"], args.device)

    def run(steps: int) -> None:
        for _ in range(steps):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()

    run(GRAPH_WARMUP + 3)
    barrier.wait()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        run(CHUNK)
        steps += CHUNK
    results.put(steps * args.k / (time.perf_counter() - start))


def measure(args, processes: int) -> list[float]:
    """Model-iterations per second of each of ``processes`` concurrent trials."""
    ctx = mp.get_context("spawn")  # a fresh CUDA context per process, none in this one
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates, deadline = [], time.monotonic() + args.seconds + 300
    while len(rates) < processes:
        try:
            rates.append(results.get(timeout=1))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a sharing process failed (exit codes {dead}) or timed out") from None
    for p in procs:
        p.join()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="mnist")
    parser.add_argument("--model", default="IC-STN-4(a)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", type=int, default=3, help="models per trial")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=8.0, help="wall time of each measurement")
    parser.add_argument("--label", default="plain", help="how the processes share the device, e.g. mps")
    args = parser.parse_args(argv)
    single = None
    for n in args.processes:
        rates = measure(args, n)
        total = sum(rates)
        single = single or (total if n == 1 else None)
        row = {"mode": f"processes:{args.label}", "device": args.device, "experiment": args.experiment, "model": args.model,
               "k": args.k, "processes": n, "model_iters_per_s": round(total, 2), "per_process": [round(r, 2) for r in rates]}  # fmt: skip
        if single:
            row["ratio_to_one_process"] = round(total / single, 3)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
