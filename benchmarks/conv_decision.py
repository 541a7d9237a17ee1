"""Which convolution should train the paper's models on this GPU: the measurement behind icstn.layers.CONV["cuda"].

    python -m benchmarks.conv_decision [--k 128] [--batch 100] [--budget 330] [--table FILE] [--launches FILE]

1. For each convolution shape of the models (default: IC-STN-4(a) and the GTSRB IC-STN-4) at
   K models and batch B: the median time of forward, input gradient and weight gradient (replays
   of a CUDA graph of the call, as the training step runs it: no Python launch cost; eager where
   a call cannot be captured, and the row says so), and the error of each against the grouped
   convolution in exact float32 (cuDNN without TF32), as max |a - b| / max |b|, for the formulations
     grouped-tf32       cuDNN's grouped convolution under TF32: the fast path today
     grouped-bf16-nhwc  the same in bfloat16, channels-last
     triton-tf32        icstn.triton_conv under TF32 (its tl.dot on tensor cores)
     triton-tf32-dot    the same with tl.dot for every channel block, padded to 16, where it
                        otherwise loops over FMAs (icstn.triton_conv.DOT_MIN_CHANNELS = 1)
     triton-fp32        icstn.triton_conv in exact float32
     inductor           torch.compile(mode="max-autotune-no-cudagraphs") of the grouped convolution,
                        with Inductor's Triton templates for both gradients where this torch has them
2. The launch search: for each shape and direction, the Triton kernels under TF32 with each of a
   few launch settings (``LAUNCH_SEARCH``: block sizes, warps, stages; the first is today's); the
   fastest within --max-error is written to --launches (icstn/triton_conv.py's LAUNCHES_FILE,
   which every launch reads).
3. The fast path's training step (``benchmarks.throughput``: K stacked models, one CUDA graph,
   TF32) of both models at each K the trials run (3, 5, 32, 128), for each whole-model choice of
   icstn.layers.CONV, the first being today's default.

The decision (``decide``) is safe by construction: a choice is eligible only where its kernels
were measured in every direction of every shape within --max-error of exact float32, and at
every model and K the default ran; the default changes only for an eligible choice whose
geometric mean of the end-to-end ratios is at least --min-gain (1.10: a 10% win), and the
output gives each choice's margin. Inductor's autotuning takes longest, so it runs last; a
measurement starts only while --budget lasts, and what the budget leaves out gets a row saying
so. Every measurement is a JSON line on stdout; the table and the decision go to stderr and
--table. Without a CUDA device it prints one line saying so; ``--device cpu`` runs the plumbing
on the CPU (the grouped formulations time the CPU's convolution there).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from icstn import layers, models, triton_conv

MODELS = (("mnist", "IC-STN-4(a)"), ("gtsrb", "IC-STN-4"))
DIRECTIONS = ("forward", "input", "weight")
TRIAL_K = (3, 5, 32, 128)  # K that trials run: the paper's grids (seeds x noise levels), a reference (5), packed sweeps
MIN_GAIN = 1.10  # the default changes only for a win of at least 10%, geometric mean over models and K
#: the kernels each whole-model choice of icstn.layers.CONV trains with (under TF32, as the step
#: runs): a choice whose kernels were not checked against exact float32 is never chosen
CHOICE_KERNELS = {"grouped": "grouped-tf32", "triton": "triton-tf32", "gemm": None}
#: the launch settings the search times per shape and direction, today's first (icstn.triton_conv.TUNABLE)
_CONV_SETTINGS = ((64, 4, 2), (128, 4, 3), (256, 8, 2), (128, 8, 4))  # BLOCK_N, num_warps, num_stages
_WGRAD_SETTINGS = ((64, 32, 4, 3), (32, 64, 4, 2), (64, 64, 8, 3), (128, 32, 8, 2))  # BLOCK_N, BLOCK_R, num_warps, num_stages
LAUNCH_SEARCH = {
    "conv": [{}, *({"BLOCK_N": n, "num_warps": w, "num_stages": st} for n, w, st in _CONV_SETTINGS)],
    "wgrad": [{}, *({"BLOCK_N": n, "BLOCK_R": r, "num_warps": w, "num_stages": st} for n, r, w, st in _WGRAD_SETTINGS)],
}
#: name -> (convolution, float32 precision, dtype, channels-last, icstn.triton_conv.DOT_MIN_CHANNELS
#: or None for its default); "inductor" compiles the grouped convolution.
FORMULATIONS = {
    "grouped-tf32": (layers.conv_grouped, "tf32", torch.float32, False, None),
    "grouped-bf16-nhwc": (layers.conv_grouped, "tf32", torch.bfloat16, True, None),
    "triton-tf32": (layers.conv_triton, "tf32", torch.float32, False, None),
    "triton-tf32-dot": (layers.conv_triton, "tf32", torch.float32, False, 1),
    "triton-fp32": (layers.conv_triton, "ieee", torch.float32, False, None),
    "inductor": (layers.conv_grouped, "tf32", torch.float32, False, None),
}


def model(text: str) -> tuple[str, str]:
    """--models' "experiment:model", checked against the registry."""
    experiment, _, name = text.partition(":")
    try:
        models.get_config(experiment, name)
    except (KeyError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (expected experiment:model, e.g. mnist:IC-STN-4(a))") from exc
    return experiment, name


def conv_shapes(pairs=MODELS) -> dict[tuple, list[str]]:
    """(C, C', kh, kw, H, W) of every convolution of the models -> the networks that run it."""
    shapes: dict[tuple, list[str]] = {}
    for experiment, name in pairs:
        net = models.AlignNet(models.get_config(experiment, name), [0])
        nets = [("predictor", p) for p in net.predictors] + ([("classifier", net.classifier)] if net.classifier else [])
        for part, stacked in nets:
            for shape in stacked.convs:
                shapes.setdefault(shape, []).append(f"{name} {part}")
    return shapes


def shape_name(shape: tuple) -> str:
    c, c_out, kh, kw, h, w = shape
    return f"{c}->{c_out} {kh}x{kw} on {h}x{w}"


@contextlib.contextmanager
def fp32_precision(value: str):
    """TF32 ("tf32") or exact ("ieee") float32 for cuDNN, its convolutions and the matmuls, as icstn.step sets it."""
    flags = (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul)
    before = [f.fp32_precision for f in flags]
    for f in flags:
        f.fp32_precision = value
    try:
        yield
    finally:
        for f, v in zip(flags, before):
            f.fp32_precision = v


@contextlib.contextmanager
def dot_min_channels(value: int | None):
    """icstn.triton_conv.DOT_MIN_CHANNELS set to ``value`` (None: left alone), for the forward and the backward."""
    if value is None:
        yield
        return
    before, triton_conv.DOT_MIN_CHANNELS = triton_conv.DOT_MIN_CHANNELS, value
    try:
        yield
    finally:
        triton_conv.DOT_MIN_CHANNELS = before


@contextlib.contextmanager
def side_stream(cuda: bool):
    """A CUDA stream of its own for building and timing calls (a capture needs one: the gradients run
    on their forward's stream, so the forward is built on it too); nothing on a CPU."""
    if not cuda:
        yield None
        return
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield stream
    torch.cuda.current_stream().wait_stream(stream)


def median_ms(fn, reps: int, cuda: bool, stream=None) -> tuple[float, object, str]:
    """The median milliseconds of ``fn()`` over ``reps`` calls after three warm-up calls (compilation,
    autotuning, cuDNN's algorithm search), the first call's result, and how it was timed: on CUDA
    replays of a graph of one call captured on ``stream`` ("graph"), as the training step runs, or
    eager calls where the call cannot be captured ("eager: why")."""
    out = fn()
    fn(), fn()
    if not cuda:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), out, "eager"
    torch.cuda.synchronize()
    try:
        graph, how = torch.cuda.CUDAGraph(), "graph"
        with torch.cuda.graph(graph, stream=stream):
            fn()
        call = graph.replay
    except Exception as exc:  # a call that cannot be captured is timed eagerly, and the row says so
        torch.cuda.synchronize()
        call, how = fn, f"eager: {type(exc).__name__}: {str(exc)[:100]}"
    call()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events), out, how


def directions(conv, x, w, b, dy) -> dict:
    """The three calls timed: forward without autograd, and each gradient alone, from a kept graph."""
    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
    y_x, y_w = conv(xg, w, b), conv(x, wg, bg)  # graphs where only the input, or only the weights, need a gradient

    def forward():
        with torch.no_grad():
            return conv(x, w, b)

    return {
        "forward": forward,
        "input": lambda: torch.autograd.grad(y_x, xg, dy, retain_graph=True)[0],
        "weight": lambda: torch.autograd.grad(y_w, (wg, bg), dy, retain_graph=True)[0],
    }


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).abs().max() / want.abs().max()).item()


def compiled(conv):
    """A fresh Inductor compilation of ``conv``, with its Triton conv templates where this torch has them."""
    import torch._inductor.config as inductor

    for name in ("max_autotune_conv_backends", "max_autotune_conv_bwd_weight_backends", "max_autotune_conv_bwd_input_backends"):
        if hasattr(inductor, name):
            setattr(inductor, name, "ATEN,TRITON")
    for name in ("cache_size_limit", "recompile_limit"):  # one code object, many shapes and grad modes
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    return torch.compile(conv, mode="max-autotune-no-cudagraphs", dynamic=False)


def kernels(args, shapes: dict, formulations: list[str], emit, rows: list[dict]) -> None:
    """Part 1: every shape x formulation x direction, timed and compared, appended to ``rows``."""
    cuda = args.device.startswith("cuda")
    for shape, used_by in shapes.items():
        c, c_out, kh, kw, h, w = shape
        x, weight, bias, dy = _tensors(args, shape)
        with fp32_precision("ieee"):
            calls = directions(layers.conv_grouped, x, weight, bias, dy)
            want = {d: calls[d]() for d in DIRECTIONS}  # the exact reference
        del calls
        for name in formulations:
            row = {"shape": shape_name(shape), "c_in": c, "c_out": c_out, "kernel": [kh, kw], "input": [h, w], "k": args.k,
                   "batch": args.batch, "used_by": used_by, "formulation": name}  # fmt: skip
            conv, precision, dtype, nhwc, dot_min = FORMULATIONS[name]
            if time.monotonic() > args.deadline:
                rows.append(emit({**row, "skipped": f"the budget of {args.budget:.0f} s was spent"}))
                continue
            fmt = torch.channels_last if nhwc else torch.contiguous_format
            inputs = [t.to(dtype).contiguous(memory_format=fmt) if t.ndim == 4 else t.to(dtype) for t in (x, weight, bias, dy)]
            calls = None
            try:
                with fp32_precision(precision), dot_min_channels(dot_min), side_stream(cuda) as stream:
                    calls = directions(compiled(conv) if name == "inductor" else conv, *inputs)
                    for d in DIRECTIONS:
                        ms, out, how = median_ms(calls[d], args.reps, cuda, stream)
                        rows.append(emit({**row, "direction": d, "ms": round(ms, 4), "error": relative_error(out, want[d]), "timed": how}))
                        del out
            except Exception as exc:  # a formulation that fails on this card is a finding, not the end of the run
                rows.append(emit({**row, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"}))
            del calls, inputs
            gc.collect()


def launch_search(args, shapes: dict, emit, rows: list[dict]) -> None:
    """Part 2: each shape and direction of the Triton kernels under TF32 with each setting of
    LAUNCH_SEARCH, timed and compared with exact float32, appended to ``rows``."""
    cuda = args.device.startswith("cuda")
    for shape in shapes:
        x, weight, bias, dy = _tensors(args, shape)
        with fp32_precision("ieee"):
            calls = directions(layers.conv_grouped, x, weight, bias, dy)
            want = {d: calls[d]() for d in DIRECTIONS}
        del calls
        for d in DIRECTIONS:
            for setting in LAUNCH_SEARCH["wgrad" if d == "weight" else "conv"]:
                row = {"search": shape_name(shape), "launch": triton_conv.launch_key(d, *shape), "direction": d, "setting": setting,
                       "k": args.k, "batch": args.batch}  # fmt: skip
                if time.monotonic() > args.deadline:
                    rows.append(emit({**row, "skipped": f"the budget of {args.budget:.0f} s was spent"}))
                    continue
                before = dict(triton_conv.OVERRIDE)
                triton_conv.OVERRIDE.update(setting)
                try:
                    with fp32_precision("tf32"), side_stream(cuda) as stream:
                        call = directions(layers.conv_triton, x, weight, bias, dy)[d]
                        ms, out, how = median_ms(call, args.reps, cuda, stream)
                    rows.append(emit({**row, "ms": round(ms, 4), "error": relative_error(out, want[d]), "timed": how}))
                except Exception as exc:
                    rows.append(emit({**row, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"}))
                finally:
                    triton_conv.OVERRIDE.clear()
                    triton_conv.OVERRIDE.update(before)
                    gc.collect()


def _tensors(args, shape: tuple) -> list[torch.Tensor]:
    """x (B, K*C, H, W), w (K, C', C, kh, kw), bias (K, C') and dy (B, K*C', H', W') on the device, seeded."""
    c, c_out, kh, kw, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.k * c, h, w, generator=g)
    weight = torch.randn(args.k, c_out, c, kh, kw, generator=g) / math.sqrt(c * kh * kw)
    bias = torch.randn(args.k, c_out, generator=g)
    dy = torch.randn(args.batch, args.k * c_out, h - kh + 1, w - kw + 1, generator=g)
    return [t.to(args.device) for t in (x, weight, bias, dy)]


def end_to_end(args, emit, rows: list[dict]) -> None:
    """Part 3: model-iterations per second of the fast path's step per model, K and whole-model choice, appended to ``rows``."""
    from benchmarks.throughput import FAST_PATH, rate, trainers_for
    from icstn.data import synthetic

    device_type = torch.device(args.device).type
    default = layers.CONV[device_type]
    for experiment, name in args.models:
        cfg, data = models.get_config(experiment, name), synthetic(experiment)
        for k in args.e2e_k:
            base = None
            for choice in args.choices:
                row = {"end_to_end": name, "experiment": experiment, "k": k, "batch": args.batch, "choice": choice}
                if time.monotonic() > args.deadline:
                    rows.append(emit({**row, "skipped": f"the budget of {args.budget:.0f} s was spent"}))
                    continue
                layers.CONV[device_type] = choice
                try:
                    per_s = rate(trainers_for(cfg, data, k, FAST_PATH[device_type], args.device, args.batch), args.steps, args.warmup)
                except Exception as exc:
                    rows.append(emit({**row, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"}))
                    continue
                finally:
                    layers.CONV[device_type] = default
                    gc.collect()
                    if device_type == "cuda":  # each K's graph and buffers go before the next
                        torch.cuda.empty_cache()
                base = per_s if choice == args.choices[0] else base  # ratios to the first choice, at this K
                rows.append(emit({**row, "model_iters_per_s": round(per_s, 2), **({"ratio": round(per_s / base, 3)} if base else {})}))


def decide(kernel_rows: list[dict], e2e_rows: list[dict], max_error: float, min_gain: float = MIN_GAIN,
           search_rows: list[dict] = ()) -> tuple[list[str], dict]:  # fmt: skip
    """The table's lines, and the decision: the winner per shape, the launch setting per shape and
    direction, and the whole-model choice. The first choice of ``e2e_rows`` is the default; another
    replaces it only where it is eligible (``eligible``) and its geometric mean of the end-to-end
    ratios is at least ``min_gain``."""
    lines = [f"{'shape':<20} {'formulation':<18} {'forward ms':>10} {'input ms':>9} {'weight ms':>9} {'total ms':>9} {'max error':>9}"]
    winners = {}
    for shape in dict.fromkeys(r["shape"] for r in kernel_rows):
        totals = {}
        for name in dict.fromkeys(r["formulation"] for r in kernel_rows if r["shape"] == shape):
            mine = [r for r in kernel_rows if r["shape"] == shape and r["formulation"] == name]
            got = {r["direction"]: r for r in mine if "ms" in r}
            if len(got) < len(DIRECTIONS):
                why = next((r.get("failed") or r.get("skipped") for r in mine if "ms" not in r), "")
                lines.append(f"{shape:<20} {name:<18} {why[:80]}")
                continue
            total, error = sum(r["ms"] for r in got.values()), max(r["error"] for r in got.values())
            ms = " ".join(f"{got[d]['ms']:>{n}.3f}" for d, n in zip(DIRECTIONS, (10, 9, 9)))
            lines.append(f"{shape:<20} {name:<18} {ms} {total:>9.3f} {error:>9.1e}")
            if error <= max_error:
                totals[name] = total
        winners[shape] = min(totals, key=totals.get) if totals else None
    lines += ["", f"winner per shape (fastest in all three directions, error <= {max_error:g} in each):"]
    lines += [f"  {shape:<20} {name}" for shape, name in winners.items()]
    launches = fastest_launches(search_rows, max_error)
    if search_rows:
        lines += ["", f"launch per shape and direction (the fastest setting within {max_error:g}; {{}}: today's):"]
        lines += [f"  {key:<36} {setting}" for key, setting in launches.items()]
    choices = list(dict.fromkeys(r["choice"] for r in e2e_rows))
    default = choices[0] if choices else None
    ran = {c: {(r["end_to_end"], r["k"]): r["ratio"] for r in e2e_rows if r["choice"] == c and "ratio" in r} for c in choices}
    geomean = {c: round(math.exp(sum(map(math.log, v.values())) / len(v)), 3) for c, v in ran.items() if v}
    why = {c: eligible(c, kernel_rows, ran, default, max_error) for c in choices}
    lines += ["", "end to end, model-iterations/s (ratio to the first choice at that K):"]
    for r in e2e_rows:
        rate = f"{r['model_iters_per_s']:>9.1f}" + (f" ({r['ratio']:.2f}x)" if "ratio" in r else "") if "model_iters_per_s" in r else ""
        lines.append(f"  {r['end_to_end']:<12} K={r['k']:<4} {r['choice']:<8} {rate or (r.get('failed') or r.get('skipped', ''))[:80]}")
    margin = {c: round(g / min_gain - 1, 3) for c, g in geomean.items() if c != default}
    candidates = [c for c in margin if why[c] is None and margin[c] >= 0]
    best = max(candidates, key=geomean.get, default=default)
    lines.append(f"whole-model choice: {best} (default {default}; geometric mean of the ratios: {geomean}; a change needs >= {min_gain:g})")
    for c in margin:
        lines.append(f"  {c}: margin {margin[c]:+.1%} over the {min_gain:g}x needed" + (f"; not eligible: {why[c]}" if why[c] else ""))
    decision = {"decision": "conv", "winner_per_shape": winners, "launches": launches, "e2e_geomean_ratio": geomean,
                "default": default, "min_gain": min_gain, "margin": margin, "not_eligible": {c: w for c, w in why.items() if w},
                "whole_model_choice": best}  # fmt: skip
    return lines, decision


def eligible(choice: str, kernel_rows: list[dict], ran: dict, default: str | None, max_error: float) -> str | None:
    """None where ``choice`` may replace ``default``, else why not: its kernels (CHOICE_KERNELS) unmeasured,
    failed or beyond ``max_error`` of exact float32 in some shape and direction, or its steps missing
    at a model and K the default ran."""
    if choice == default:
        return None
    formulation = CHOICE_KERNELS.get(choice)
    if formulation is None:
        return "no kernels of it are checked against exact float32"
    shapes = dict.fromkeys(r["shape"] for r in kernel_rows)
    if not shapes:
        return "no kernel was measured"
    for shape in shapes:
        got = {r["direction"]: r for r in kernel_rows if r["shape"] == shape and r["formulation"] == formulation and "error" in r}
        for d in DIRECTIONS:
            if d not in got:
                return f"{formulation} {d} of {shape} not measured"
            if not got[d]["error"] <= max_error:  # NaN fails too
                return f"{formulation} {d} of {shape}: error {got[d]['error']:.1e} > {max_error:g}"
    missing = set(ran.get(default, {})) - set(ran.get(choice, {}))
    if missing or not ran.get(choice):
        return f"no step at {sorted(missing) or 'any model and K'}"
    return None


def fastest_launches(search_rows: list[dict], max_error: float) -> dict[str, dict]:
    """launch key -> the fastest setting within ``max_error`` (what icstn.triton_conv reads); a
    layer and direction where none qualifies keeps today's (absent)."""
    best: dict[str, dict] = {}
    for r in search_rows:
        if "ms" in r and r["error"] <= max_error and (r["launch"] not in best or r["ms"] < best[r["launch"]]["ms"]):
            best[r["launch"]] = r
    return {key: r["setting"] for key, r in best.items() if r["setting"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", type=model, nargs="+", default=list(MODELS), metavar="EXPERIMENT:MODEL",
                        help="whose convolutions and steps (default: mnist:IC-STN-4(a) gtsrb:IC-STN-4)")
    parser.add_argument("--k", type=int, default=128, help="models per convolution (part 1)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=20, help="timed calls per direction (part 1)")
    parser.add_argument("--formulations", nargs="+", choices=list(FORMULATIONS), default=list(FORMULATIONS))
    parser.add_argument("--e2e-k", type=int, nargs="*", default=list(TRIAL_K), help="K of the end-to-end steps (part 3)")
    parser.add_argument("--choices", nargs="+", choices=sorted(layers.CONVOLUTIONS), default=["grouped", "triton"],
                        help="whole-model choices of icstn.layers.CONV; the first is the default the others must beat")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (part 2)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-error", type=float, default=2e-3, help="a winner's largest error, in every direction")
    parser.add_argument("--min-gain", type=float, default=MIN_GAIN, help="the geometric-mean ratio a choice needs to replace the default")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                        help="the launch search of the Triton kernels (default: on CUDA)")  # fmt: skip
    parser.add_argument("--launches", type=Path, default=triton_conv.LAUNCHES_FILE, help="the search's winners: the kernels' file")
    parser.add_argument("--budget", type=float, default=330, help="seconds in which a measurement may start")
    parser.add_argument("--table", type=Path, help="also write the table and the decision here")
    args = parser.parse_args(argv)
    args.started = time.monotonic()
    args.deadline = args.started + args.budget
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device: the convolution decision times kernels on a GPU (--device cpu dry-runs it)"}))
        return 0
    where = {"device": args.device, "torch": torch.__version__, "triton": getattr(triton_conv.triton, "__version__", None)}
    if cuda:
        where["device_name"] = torch.cuda.get_device_name(args.device)
        torch.backends.cudnn.benchmark = True  # as the training step: cuDNN's fastest algorithm per shape

    def emit(row: dict) -> dict:
        print(json.dumps({**where, **row}), flush=True)
        return row

    shapes = conv_shapes(args.models)
    kernel_rows, search_rows, e2e_rows = [], [], []
    try:
        kernels(args, shapes, [f for f in args.formulations if f != "inductor"], emit, kernel_rows)
        if args.search if args.search is not None else cuda:
            launch_search(args, shapes, emit, search_rows)
        end_to_end(args, emit, e2e_rows)
        if "inductor" in args.formulations:
            kernels(args, shapes, ["inductor"], emit, kernel_rows)
    except KeyboardInterrupt:  # `timeout -s INT`: the decision from what was measured
        emit({"interrupted": f"after {time.monotonic() - args.started:.0f} s"})
    lines, decision = decide(kernel_rows, e2e_rows, args.max_error, args.min_gain, search_rows)
    if search_rows:  # where the kernels read them: the measured settings over the file's earlier ones
        earlier = json.loads(args.launches.read_text()) if args.launches.is_file() else {}
        args.launches.write_text(json.dumps(earlier | decision["launches"], indent=1, sort_keys=True) + "\n")
    emit({**decision, "seconds": round(time.monotonic() - args.started, 1)})
    text = "\n".join(lines) + "\n"
    print(text, file=sys.stderr, end="")
    if args.table:
        args.table.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
