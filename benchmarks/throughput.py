"""Training throughput of the paper's models: model-iterations per second, as JSON lines.

    python -m benchmarks.throughput --model "IC-STN-4(a)" --device cuda \\
        --modes eager graph batched batched+graph --k 1 32 128 [--profile] [--project]
    python -m benchmarks.throughput --device cpu --threads 1 [--repeat 2]

Without ``--model``, it measures the suite: each of the paper's low-arithmetic models (``SUITE``) at
its K, the stacked step by the fast path and by the path before it (``baseline_path``: affine_grid's
grid, grouped oneDNN convolutions, plain linear layers, every warp sampled), alternated in one run,
with each step's arithmetic (``torch.utils.flop_counter``, counted on the baseline path: the
convolutions' own multiply-adds), its GFLOP/s, and their share of a 1024x1024 float32 matmul
measured in the same run.

Every run first measures the in-run baseline, one model trained by the plain path (eager, no
CUDA graph, no TF32, k = 1), and reports each figure with its ratio to it: machines are noisy,
ratios within one run are not. Warm-up steps (and a graph's capture) are excluded. Data are
random uint8 images of the experiment's shape (``icstn.data.synthetic``): a step's cost does
not depend on the pixels, and nothing needs preparing.

Modes, each for k models:
  eager          k separate models, plain path, one after another
  graph          k separate models, each step a CUDA-graph replay (CUDA only)
  batched        k models stacked in one step (grouped convolutions, batched matmuls)
  batched+graph  the fast path: k stacked models, the whole step one CUDA-graph replay

``--mix A B ...`` (CUDA) trains models of different architectures side by side, back to back
against one CUDA stream each. ``--profile`` prints the top operators of the stacked step (not
captured, so that each kernel is named and timed; a graph replays the same kernels).
``--project`` measures every model of the grids at the pipeline's pack size and prints the
projected device-hours of the profile (training steps only); ``--grids`` limits it to some grids,
and ``--fit SECONDS`` sizes each grid's iterations to a time (how many fit a GPU window).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from icstn import layers, models, warps
from icstn.data import synthetic
from icstn.experiments import EXPERIMENTS
from icstn.step import GRAPH_WARMUP
from icstn.train import TrainConfig, Trainer

MODES = ("eager", "graph", "batched", "batched+graph")
#: The paper's low-arithmetic models, each at the K a CPU trial trains: (experiment, model, K).
SUITE = (
    ("planar", "IC-STN-6", 12),
    ("planar", "c-STN-1", 12),
    ("mnist", "STN(b)", 3),
    ("mnist", "IC-STN-4(b)", 3),
    ("mnist", "c-STN-4(a)", 3),
    ("mnist", "IC-STN-4(a)", 3),
    ("gtsrb", "IC-STN-4", 3),
)
FAST_PATH = {"cpu": "batched", "cuda": "batched+graph"}  # what the pipeline trains with, per device type


def trainers_for(cfg: models.ModelConfig, data, k: int, mode: str, device: str, batch: int = 100) -> list[Trainer]:
    """The trainers one step of ``mode`` runs: one stacked trainer, or k single-model ones."""
    fast = mode != "eager"
    train = TrainConfig(iterations=10**9, batch_size=batch, cuda_graph="graph" in mode, tf32=fast, noise_warp=cfg.warp)
    if mode.startswith("batched"):
        return [Trainer(cfg, train, data, list(range(k)), [3.5] * k, device)]
    return [Trainer(cfg, train, data, [i], [3.5], device) for i in range(k)]


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def rate(trainers: list[Trainer], steps: int, warmup: int, streams=None) -> float:
    """Model-iterations per second over ``steps`` steps of every trainer, after ``warmup``."""
    device = str(trainers[0].device)
    warmup = max(warmup, GRAPH_WARMUP + 1) if trainers[0].graphed else warmup  # past the capture
    for _ in range(warmup):
        for t in trainers:
            t.train_step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        for i, t in enumerate(trainers):
            if streams is None:
                t.train_step()
            else:
                with torch.cuda.stream(streams[i]):
                    t.train_step()
    _sync(device)
    return sum(t.k for t in trainers) * steps / (time.perf_counter() - start)


@contextlib.contextmanager
def baseline_path(device_type: str):
    """Within it, a device type's models train by the path before the CPU fast path: the grid by
    ``F.affine_grid``, every convolution grouped (oneDNN), every linear layer by baddbmm, every warp
    sampled. The same numbers up to float rounding, at the old cost: the in-run baseline."""
    saved = (
        warps.GRID.get(device_type),
        layers.CONV.get(device_type),
        layers.NARROW_LINEAR.get(device_type),
        models.SAMPLE_UNREAD_LAST_WARP,
    )
    warps.GRID[device_type], layers.CONV[device_type], layers.NARROW_LINEAR[device_type] = "affine_grid", "grouped", 0
    models.SAMPLE_UNREAD_LAST_WARP = True
    try:
        yield
    finally:
        for table, value in zip((warps.GRID, layers.CONV, layers.NARROW_LINEAR), saved):
            if value is None:
                table.pop(device_type, None)
            else:
                table[device_type] = value
        models.SAMPLE_UNREAD_LAST_WARP = saved[3]


def matmul_gflops(device: str, size: int = 1024, reps: int = 10) -> float:
    """GFLOP/s of a (size x size) @ (size x size) float32 matmul on ``device``, the best of ``reps``."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_flops(trainer: Trainer) -> int:
    """Floating-point operations of one training step of ``trainer`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    return counter.get_total_flops()


def suite(device: str, steps: int, warmup: int, repeat: int, ks: list[int] | None, emit, only: list[str] | None = None) -> None:
    """Each ``SUITE`` model's stacked step by the fast path and by ``baseline_path``, alternated ``repeat``
    times; one row per model and repetition, with GFLOP/s and the share of a matmul measured in the run.
    ``only`` names the "experiment:model" entries to measure (default: all)."""
    device_type = torch.device(device).type
    peak = matmul_gflops(device)
    emit({"suite": "matmul", "size": 1024, "gflop_per_s": round(peak, 2)})
    for experiment, name, k_default in SUITE:
        if only and f"{experiment}:{name}" not in only:
            continue
        cfg, data = models.get_config(experiment, name), synthetic(experiment)
        for k in ks or [k_default]:
            (trainer,) = trainers_for(cfg, data, k, "batched", device)
            with baseline_path(device_type):
                flops = step_flops(trainer)  # the model's arithmetic, as the plain convolutions count it
            for rep in range(repeat):
                with baseline_path(device_type):
                    base = rate([trainer], steps, warmup)
                fast = rate([trainer], steps, warmup)
                gflop_s = flops * fast / k / 1e9  # model-iterations / s over K: steps / s
                emit(
                    {
                        "suite": "cpu" if device_type == "cpu" else device_type,
                        "experiment": experiment,
                        "model": name,
                        "k": k,
                        "repeat": rep,
                        "model_iters_per_s": round(fast, 2),
                        "baseline_model_iters_per_s": round(base, 2),
                        "ratio_to_baseline": round(fast / base, 3),
                        "gflop_per_step": round(flops / 1e9, 4),
                        "gflop_per_s": round(gflop_s, 2),
                        "matmul_share": round(gflop_s / peak, 4),
                    }
                )
    emit({"suite": "matmul", "size": 1024, "gflop_per_s": round(matmul_gflops(device), 2), "when": "after"})


def profile(trainer: Trainer, steps: int = 5, top: int = 10) -> list[dict]:
    """The step's top operators by self time on the device (CUDA) or the CPU."""
    from torch.profiler import ProfilerActivity

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for _ in range(GRAPH_WARMUP + 2):
        trainer.train_step()
    _sync(str(trainer.device))
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step()
        _sync(str(trainer.device))
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0]
    total = sum(getattr(e, key) for e in events)
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "op": e.key,
            "self_ms_per_step": round(getattr(e, key) / 1000 / steps, 3),
            "share": round(getattr(e, key) / total, 3),
            "calls_per_step": e.count // steps,
        }
        for e in events[:top]
    ]


def project(config: Path, overlay: Path | None, device: str, steps: int, warmup: int, emit,
            only: list[str] | None = None, fit: float | None = None, against_baseline: bool = False) -> None:  # fmt: skip
    """Time each grid model at the pipeline's models-per-trial; print device-hours per grid and in total.

    ``only`` names the grids to project (default: all); ``fit`` (seconds) also prints, per grid, the
    most iterations (a multiple of 100, at least 100 and at most the profile's) whose training steps fit that time.
    ``against_baseline`` also times each model on ``baseline_path`` right after, and prints its hours beside.
    """
    import yaml

    from pipeline import grids
    from pipeline.settings import merge, models_per_trial, with_defaults

    settings = with_defaults(yaml.safe_load(config.read_text()))
    if overlay is not None:
        settings = merge(settings, yaml.safe_load(overlay.read_text()))
    pack = models_per_trial(settings["pack"], device)
    rates, base_rates, total, base_total = {}, {}, 0.0, 0.0
    for name, path in grids.discover(settings["grids"]).items():
        if only and name not in only:
            continue
        grid = grids.load_grid(path, settings["budget"])
        data, hours, base_hours = synthetic(grid.experiment), 0.0, 0.0
        for trial in grids.expand(grid, pack):
            key = (grid.experiment, trial.model, len(trial.members), trial.train["batch_size"])
            if key not in rates:
                cfg = models.get_config(grid.experiment, trial.model)
                (trainer,) = trainers_for(cfg, data, key[2], "batched+graph", device, key[3])
                rates[key] = rate([trainer], steps, warmup)
                row = {"project": grid.name, "experiment": key[0], "model": key[1], "k": key[2], "model_iters_per_s": round(rates[key], 2)}
                if against_baseline:
                    with baseline_path(torch.device(device).type):
                        base_rates[key] = rate([trainer], steps, warmup)
                    row.update(
                        baseline_model_iters_per_s=round(base_rates[key], 2), ratio_to_baseline=round(rates[key] / base_rates[key], 3)
                    )
                emit(row)
            hours += grid.iterations * len(trial.members) / rates[key] / 3600
            base_hours += grid.iterations * len(trial.members) / base_rates[key] / 3600 if against_baseline else 0.0
        total += hours
        base_total += base_hours
        row = {
            "project": grid.name,
            "device_hours": round(hours, 3),
            "iterations": grid.iterations,
            "seeds": grid.seeds,
            "sigma_px": grid.sigma_px,
        }
        emit({**row, "baseline_device_hours": round(base_hours, 3)} if against_baseline else row)
        if fit:
            most = max(100, int(grid.iterations * fit / (hours * 3600)) // 100 * 100)
            emit({"fit": grid.name, "seconds": fit, "iterations": min(grid.iterations, most)})
    row = {"project": "total", "profile": settings.get("profile"), "device_hours": round(total, 3), "pack": pack}
    row |= {"baseline_device_hours": round(base_total, 3)} if against_baseline else {}
    emit({**row, "note": "training steps only, trials back to back"})


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo (Linux), else the platform's processor string."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or None


def _commit() -> str | None:
    """The checkout's commit (with '-dirty' when it has changes), or None outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="mnist")
    parser.add_argument("--model", help="one model's modes and K (default: the suite of the paper's low-arithmetic models)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: the device's fast path (CPU: batched; CUDA: batched+graph)")
    parser.add_argument("--k", type=int, nargs="*", help="models per step (default: --model's 1 4, the suite's own; none: only --project)")
    parser.add_argument("--repeat", type=int, default=2, help="suite: measurements of each model, fast path and baseline alternated")
    suite_names = [f"{e}:{m}" for e, m, _ in SUITE]
    parser.add_argument("--suite", nargs="+", choices=suite_names, metavar="EXPERIMENT:MODEL", help=f"suite: only these of {suite_names}")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's); a Ray trial gets ray.cpus_per_trial")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mix", nargs="+", metavar="MODEL", help="with --model: models of the experiment sharing one GPU")
    parser.add_argument("--profile", action="store_true", help="with --model: top operators of the stacked step (largest k)")
    parser.add_argument("--project", action="store_true", help="projected device-hours of the profile's grids")
    parser.add_argument("--layout", choices=["nhwc", "nchw"], help="memory layout of the grouped convolutions (default: icstn.layers')")
    parser.add_argument("--conv", choices=sorted(layers.CONVOLUTIONS), help="how K models' convolutions run (default: icstn.layers')")
    parser.add_argument("--grids", nargs="+", metavar="NAME", help="with --project: only these grids")
    parser.add_argument("--against-baseline", action="store_true", help="with --project: each model on baseline_path too, hours beside")
    parser.add_argument("--fit", type=float, metavar="SECONDS", help="with --project: the iterations whose steps fit SECONDS")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--configfile", type=Path, help="an overlay, e.g. config/quick.yaml")
    args = parser.parse_args(argv)
    if args.model is None and (args.mix or args.profile or args.layout or args.conv):
        parser.error("--mix, --profile, --layout and --conv measure one model: name it with --model")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    args.modes = args.modes or [FAST_PATH["cuda" if cuda else "cpu"]]
    where = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": _commit()}
    where["device_name"] = torch.cuda.get_device_name(args.device) if cuda else cpu_model()

    def emit(row: dict, measured: bool = True) -> None:
        print(json.dumps({**where, **({"model": args.model, "experiment": args.experiment} if measured else {}), **row}), flush=True)

    if args.model is None:
        if args.k != []:  # --k with no values: only --project
            suite(args.device, args.steps, args.warmup, args.repeat, args.k, lambda row: emit(row, measured=False), args.suite)
    else:
        ks = [1, 4] if args.k is None else args.k
        cfg = models.get_config(args.experiment, args.model)
        data = synthetic(args.experiment)
        base = rate(trainers_for(cfg, data, 1, "eager", args.device), args.steps, args.warmup)
        emit({"mode": "eager", "k": 1, "model_iters_per_s": round(base, 2), "ratio": 1.0, "baseline": True})
        # --layout and --conv change what is measured next, not the baseline: the project's plain path
        if args.layout:
            layers.CHANNELS_LAST[torch.device(args.device).type] = args.layout == "nhwc"
            where["layout"] = args.layout
        if args.conv:
            layers.CONV[torch.device(args.device).type] = args.conv
            where["conv"] = args.conv
        for mode in args.modes:
            for k in ks:
                if mode == "eager" and k == 1:
                    continue
                if "graph" in mode and not cuda:
                    emit({"mode": mode, "k": k, "skipped": "CUDA graphs need a CUDA device"})
                    continue
                per_s = rate(trainers_for(cfg, data, k, mode, args.device), args.steps, args.warmup)
                emit(
                    {
                        "mode": mode,
                        "k": k,
                        "tf32": cuda and mode != "eager",
                        "model_iters_per_s": round(per_s, 2),
                        "ratio": round(per_s / base, 3),
                    }
                )
        if args.mix:
            if not cuda:
                emit({"mode": "mix", "skipped": "sharing a GPU needs a CUDA device"})
            else:
                k = max(ks)
                trainers = [trainers_for(models.get_config(args.experiment, m), data, k, "batched+graph", args.device)[0] for m in args.mix]
                for how, streams in (("back-to-back", None), ("streams", [torch.cuda.Stream(args.device) for _ in trainers])):
                    per_s = rate(trainers, args.steps, args.warmup, streams)
                    emit(
                        {
                            "mode": f"mix:{how}",
                            "models": args.mix,
                            "k": k,
                            "model_iters_per_s": round(per_s, 2),
                            "ratio": round(per_s / base, 3),
                        }
                    )
        if args.profile:
            # the stacked step uncaptured: the same kernels as the graph, each named and timed on its own
            for row in profile(trainers_for(cfg, data, max(ks), "batched", args.device)[0]):
                emit({"profile": "batched", "k": max(ks), **row})
    if args.project:
        project(
            args.config,
            args.configfile,
            args.device,
            args.steps,
            args.warmup,
            lambda row: emit(row, measured=False),
            args.grids,
            args.fit,
            args.against_baseline,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
