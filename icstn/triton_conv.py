"""K models' 'valid' convolutions as Triton kernels, all K models in one launch grid.

cuDNN runs a grouped convolution of a few channels per group as one small kernel per group;
these kernels put the group (model) index in the launch grid instead, so that forward, input
gradient and weight gradient are one launch each for all K models. Layout, as in
``icstn.layers``: x (B, K*C, H, W), the models as channel groups; w (K, C', C, kh, kw);
bias (K, C'); out (B, K*C', H-kh+1, W-kw+1).

Each direction is an implicit GEMM over a tile of positions (b, y, x) and a block of channels:
  forward         out[n, o]   = sum_r x_patch[n, r] w[o, r],        r = (c, i, j)
  input gradient  the same kernel over dy padded by (kh-1, kw-1), with w flipped and transposed
  weight gradient dw[o, r]    = sum_n dy[o, n] x_patch[n, r]: one partial sum per chunk of the
                  positions in a buffer, then one sum over the chunks (deterministic: no atomics)
Products run as ``tl.dot`` (TF32 tensor cores when the cuDNN convolutions' TF32 switch is on,
``icstn.step``; exact float32 otherwise), each operand at least 16 wide: always in the weight
gradient, whose reduction runs over thousands of positions, and in the other two where the block
of output channels is at least ``DOT_MIN_CHANNELS`` wide. Narrower blocks, the 1-8 channels of
most of the paper's layers, run as an outer-product FMA loop that pads no channel to 16.
Grids and buffers follow from the shapes alone: no host synchronisation, so a CUDA graph
captures the calls.

Triton is optional: the CUDA build of torch ships it, and ``pip install -e .[triton]`` adds it
on a CPU, where ``TRITON_INTERPRET=1`` runs the kernels on CPU tensors (the tests). The kernels
are compiled, or wrapped for the interpreter, on first use, by the setting at that moment.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU install without the optional extra
    triton = tl = None

#: Channel blocks this wide or wider use tl.dot; narrower ones the FMA loop (forward, input gradient).
DOT_MIN_CHANNELS = 16
#: Programs the weight gradient aims for (the position chunks fill the GPU when K is small).
WGRAD_PROGRAMS = 2048
_INT32 = 2**31


def _conv_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, HO, WO, C_IN, C_OUT, G, w_co, w_ci,
                 KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
                 DOT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """y[b, g*C_OUT + o, oy, ox] = bias[g, o] + sum_{c,i,j} x[b, g*C_IN + c, oy+i-PH, ox+j-PW] * w[g, o, c, i', j'].

    x (B, G*C_IN, H, W); y (B, G*C_OUT, HO, WO), N = B*HO*WO; w's element (g, o, c, i, j) sits at
    g*C_IN*C_OUT*KH*KW + o*w_co + c*w_ci + i*KW + j, and (i', j') = (KH-1-i, KW-1-j) under FLIP.
    Grid: (position tiles, channel blocks, G).
    """
    pid_n, pid_c, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output positions (b, oy, ox)
    o = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,) output channels of model g
    n_ok, o_ok = n < N, o < C_OUT
    b, pix = n // (HO * WO), n % (HO * WO)
    oy, ox = pix // WO, pix % WO
    x_at = (b * G + g) * (C_IN * H * W) + (oy - PH) * W + (ox - PW)  # (BLOCK_N,) tap (0, 0) of channel 0
    w_at = g * (C_IN * C_OUT * KH * KW) + o * w_co  # (BLOCK_C,)
    acc = tl.full((BLOCK_N, BLOCK_C), 0, dtype=ACC)
    if DOT:
        R = C_IN * KH * KW
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)  # (BLOCK_R,) reduction index (c, i, j)
            c, i, j = r // (KH * KW), (r // KW) % KH, r % KW
            ok = n_ok[:, None] & (r < R)[None, :]
            if PH + PW > 0:
                yy, xx = oy[:, None] + (i - PH)[None, :], ox[:, None] + (j - PW)[None, :]
                ok = ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            xt = tl.load(x_ptr + x_at[:, None] + (c * H * W + i * W + j)[None, :], mask=ok, other=0.0)  # (BLOCK_N, BLOCK_R)
            if FLIP:
                i, j = KH - 1 - i, KW - 1 - j
            w_ok = (r < R)[:, None] & o_ok[None, :]
            wt = tl.load(w_ptr + (c * w_ci + i * KW + j)[:, None] + w_at[None, :], mask=w_ok, other=0.0)  # (BLOCK_R, BLOCK_C)
            acc = tl.dot(xt, wt, acc, input_precision=PRECISION, out_dtype=ACC)
    else:  # one tap of one channel at a time: an outer product of BLOCK_N inputs and BLOCK_C weights
        x_ptrs, w_ptrs = x_ptr + x_at, w_ptr + w_at
        for c in range(C_IN):
            for i in range(KH):
                x_row = x_ptrs + (c * H * W + i * W)  # (BLOCK_N,)
                w_row = w_ptrs + (c * w_ci + (KH - 1 - i if FLIP else i) * KW)  # (BLOCK_C,)
                row_ok = n_ok
                if PH > 0:
                    row_ok = row_ok & (oy + i >= PH) & (oy + i < H + PH)
                for j in range(KW):
                    ok = row_ok
                    if PW > 0:
                        ok = ok & (ox + j >= PW) & (ox + j < W + PW)
                    xv = tl.load(x_row + j, mask=ok, other=0.0)  # (BLOCK_N,)
                    wv = tl.load(w_row + (KW - 1 - j if FLIP else j), mask=o_ok, other=0.0)  # (BLOCK_C,)
                    acc += xv[:, None] * wv[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + g * C_OUT + o, mask=o_ok, other=0.0)[None, :]
    y_at = ((b * G + g) * (C_OUT * HO * WO) + pix)[:, None] + (o * (HO * WO))[None, :]
    tl.store(y_ptr + y_at, acc, mask=n_ok[:, None] & o_ok[None, :])


def _wgrad_kernel(x_ptr, dy_ptr, part_ptr, N, H, W, HO, WO, C_IN, C_OUT, G, CHUNK, C_BLOCKS,
                  KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """part[s, g, o, r] = sum over the positions n of chunk s of dy[b, g*C_OUT + o, oy, ox] * x[b, g*C_IN + c, oy+i, ox+j].

    x (B, G*C_IN, H, W); dy (B, G*C_OUT, HO, WO), N = B*HO*WO; r = (c, i, j) runs over C_IN*KH*KW;
    chunk s holds positions [s*CHUNK, (s+1)*CHUNK). Grid: (reduction x channel blocks, chunks, G).
    """
    pid, s, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    R = C_IN * KH * KW
    r = (pid // C_BLOCKS) * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    o = (pid % C_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    r_ok, o_ok = r < R, o < C_OUT
    tap = (r // (KH * KW)) * (H * W) + ((r // KW) % KH) * W + r % KW  # (BLOCK_R,) offset of tap r in x
    acc = tl.full((BLOCK_C, BLOCK_R), 0, dtype=ACC)
    for n0 in range(s * CHUNK, s * CHUNK + CHUNK, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,) positions (b, oy, ox)
        n_ok = n < N
        b, pix = n // (HO * WO), n % (HO * WO)
        dy_at = (b * G + g) * (C_OUT * HO * WO) + pix
        dy_ok = o_ok[:, None] & n_ok[None, :]
        dyt = tl.load(dy_ptr + dy_at[None, :] + (o * (HO * WO))[:, None], mask=dy_ok, other=0.0)  # (BLOCK_C, BLOCK_N)
        x_at = (b * G + g) * (C_IN * H * W) + (pix // WO) * W + pix % WO
        xt = tl.load(x_ptr + x_at[:, None] + tap[None, :], mask=n_ok[:, None] & r_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_R)
        acc = tl.dot(dyt, xt, acc, input_precision=PRECISION, out_dtype=ACC)
    tl.store(part_ptr + ((s * G + g) * C_OUT + o)[:, None] * R + r[None, :], acc, mask=o_ok[:, None] & r_ok[None, :])


class Launch(NamedTuple):
    """One kernel launch: ``kernel`` ("conv" or "wgrad"), its grid, arguments and compile-time
    settings (constexprs and num_warps), and the tensor it fills."""

    kernel: str
    grid: tuple[int, int, int]
    args: tuple
    meta: dict
    out: torch.Tensor


@functools.cache
def _kernels(interpret: bool) -> dict:
    """The kernels, compiled for the GPU (``interpret`` False) or wrapped for Triton's interpreter."""
    del interpret  # the cache key: triton.jit reads the same setting
    return {"conv": triton.jit(_conv_kernel), "wgrad": triton.jit(_wgrad_kernel)}


def _check(*tensors: torch.Tensor) -> None:
    """A clear error where the kernels cannot run on these tensors."""
    if triton is None:
        raise RuntimeError("the 'triton' convolution needs the triton package: the CUDA build of torch ships it; pip install -e .[triton]")
    for t in tensors:
        if t.device.type != "cuda" and not triton.knobs.runtime.interpret:
            raise ValueError(f"the 'triton' convolution runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; got {t.device}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the 'triton' convolution takes float32 or float64 tensors, got {t.dtype}")
        if t.numel() >= _INT32:
            raise ValueError(f"the 'triton' convolution indexes with 32 bits; a tensor of {t.numel():,} elements is too large")


def _run(launch: Launch) -> torch.Tensor:
    _check(launch.out)
    _kernels(triton.knobs.runtime.interpret)[launch.kernel][launch.grid](*launch.args, **launch.meta)
    return launch.out


def _precision(dtype: torch.dtype) -> tuple:
    """(tl.dot input precision, accumulator type): TF32 where the cuDNN convolutions use it, else exact."""
    if dtype == torch.float64:
        return "ieee", tl.float64
    for level in (torch.backends.cudnn.conv, torch.backends.cudnn, torch.backends):  # "none" inherits
        if level.fp32_precision != "none":
            return ("tf32" if level.fp32_precision == "tf32" else "ieee"), tl.float32
    return "ieee", tl.float32


# Launch settings. The defaults below were set by the registers and spills of sm_90 compiles
# (ptxas -v: 40-100 registers, no spills). ``benchmarks.conv_decision`` times a few settings per
# layer and direction on a GPU (CUDA-graph replays; each within the decision's error tolerance)
# and writes the fastest to LAUNCHES_FILE, which every launch reads: "<direction> <layer>" ->
# {BLOCK_N, BLOCK_R, num_warps, num_stages}. The path (tl.dot or FMA) is DOT_MIN_CHANNELS's, never tuned.
LAUNCHES_FILE = Path(__file__).with_name("triton_launches.json")
TUNABLE = ("BLOCK_N", "BLOCK_R", "num_warps", "num_stages")
#: A launch setting that overrides LAUNCHES_FILE's for every layer: the decision's search sets it while it times one
OVERRIDE: dict = {}


@functools.cache
def _launches_file() -> dict:
    return json.loads(LAUNCHES_FILE.read_text()) if LAUNCHES_FILE.is_file() else {}


def launch_key(direction: str, c_in: int, c_out: int, kh: int, kw: int, h: int, w: int) -> str:
    """'forward 6->24 7x7 on 30x30': a layer (its forward's input channels, output channels, kernel and input size) and a direction."""
    return f"{direction} {c_in}->{c_out} {kh}x{kw} on {h}x{w}"


def _tuned(meta: dict, key: str) -> dict:
    """``meta`` with the layer's measured launch settings (LAUNCHES_FILE, then OVERRIDE) over its defaults."""
    chosen = {**_launches_file().get(key, {}), **OVERRIDE}
    return meta | {k: v for k, v in chosen.items() if k in TUNABLE}


def _conv_launch(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> Launch:
    """The forward (x (B, K*C, H, W) -> (B, K*C', H', W')) or, ``transposed``, the input gradient
    (dy (B, K*C', H', W') -> dx (B, K*C, H, W)) of the stacked convolution with w (K, C', C, kh, kw)."""
    k, c_out, c_in, kh, kw = w.shape
    if transposed:  # a 'full' convolution with the flipped kernel: dy's channels in, x's out
        c_in, c_out, pad, w_co, w_ci = c_out, c_in, (kh - 1, kw - 1), kh * kw, c_in * kh * kw
    else:
        pad, w_co, w_ci = (0, 0), c_in * kh * kw, kh * kw
    b, _, h, wd = x.shape
    ho, wo = h + 2 * pad[0] - kh + 1, wd + 2 * pad[1] - kw + 1
    y = torch.empty(b, k * c_out, ho, wo, device=x.device, dtype=x.dtype)  # (B, K*C_out, HO, WO)
    block_c = min(triton.next_power_of_2(c_out), 64)
    dot = block_c >= DOT_MIN_CHANNELS
    block_c = max(block_c, 16) if dot else block_c  # tl.dot's operands: 16 or more along every axis
    precision, acc = _precision(x.dtype)
    args = (x, w, bias if bias is not None else y, y, b * ho * wo, h, wd, ho, wo, c_in, c_out, k, w_co, w_ci)
    meta = dict(KH=kh, KW=kw, PH=pad[0], PW=pad[1], FLIP=transposed, HAS_BIAS=bias is not None, DOT=dot, PRECISION=precision,
                ACC=acc, BLOCK_N=128, BLOCK_R=16, BLOCK_C=block_c, num_warps=8 if dot else 4)  # fmt: skip
    layer = (c_out, c_in, kh, kw, ho, wo) if transposed else (c_in, c_out, kh, kw, h, wd)  # the forward's (C, C', kh, kw, H, W)
    meta = _tuned(meta, launch_key("input" if transposed else "forward", *layer))
    grid = (triton.cdiv(b * ho * wo, meta["BLOCK_N"]), triton.cdiv(c_out, block_c), k)
    return Launch("conv", grid, args, meta, y)


def _weight_grad_launch(x: torch.Tensor, dy: torch.Tensor, w_shape: torch.Size, chunks: int | None = None) -> Launch:
    """The partial sums of dw (K, C', C, kh, kw) from x (B, K*C, H, W) and dy (B, K*C', H', W'),
    (chunks, K, C', C*kh*kw), over ``chunks`` runs of positions (default: enough programs to fill a GPU)."""
    k, c_out, c_in, kh, kw = w_shape
    b, _, h, wd = x.shape
    ho, wo = dy.shape[2:]
    n, r = b * ho * wo, c_in * kh * kw
    tuned = _tuned({"BLOCK_N": 32, "BLOCK_R": 32, "num_warps": 4}, launch_key("weight", c_in, c_out, kh, kw, h, wd))
    block_n, block_r, block_c = tuned["BLOCK_N"], tuned["BLOCK_R"], min(max(triton.next_power_of_2(c_out), 16), 64)
    blocks = triton.cdiv(r, block_r) * triton.cdiv(c_out, block_c)
    if chunks is None:
        chunks = max(1, min(WGRAD_PROGRAMS // (k * blocks), triton.cdiv(n, block_n)))
    chunk = triton.cdiv(triton.cdiv(n, chunks), block_n) * block_n  # positions per chunk, whole tiles
    chunks = triton.cdiv(n, chunk)
    precision, acc = _precision(x.dtype)
    part = torch.empty(chunks, k, c_out, r, device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    args = (x, dy, part, n, h, wd, ho, wo, c_in, c_out, k, chunk, triton.cdiv(c_out, block_c))
    meta = dict(KH=kh, KW=kw, PRECISION=precision, ACC=acc, BLOCK_C=block_c, **tuned)
    return Launch("wgrad", (blocks, chunks, k), args, meta, part)


def _conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    _check(x, w)
    return _run(_conv_launch(x, w, bias, transposed))


def _weight_grad(x: torch.Tensor, dy: torch.Tensor, w_shape: torch.Size, chunks: int | None = None) -> torch.Tensor:
    """dw (K, C', C, kh, kw): the partial sums, then their sum in a fixed order."""
    _check(x, dy)
    return _run(_weight_grad_launch(x, dy, w_shape, chunks)).sum(0).view(w_shape).to(x.dtype)


class StackedConv2d(torch.autograd.Function):
    """``conv2d_stacked`` with its gradients: each direction one Triton launch for all K models."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.has_bias = bias is not None
        return _conv(x, w, bias.contiguous() if bias is not None else None, transposed=False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()  # (B, K*C', H', W')
        dx = _conv(dy, w, None, transposed=True) if ctx.needs_input_grad[0] else None
        dw = _weight_grad(x, dy, w.shape) if ctx.needs_input_grad[1] else None
        db = dy.sum((0, 2, 3)).view(w.shape[:2]) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (K, C')
        return dx, dw, db


def conv2d_stacked(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """K models' 'valid' convolutions with stride 1, as Triton kernels.

    x: (B, K*C, H, W), the models as channel groups; w: (K, C', C, kh, kw); bias: (K, C') or None.
    Returns (B, K*C', H-kh+1, W-kw+1), what ``F.conv2d(x, w.flatten(0, 1), bias.flatten(), groups=K)``
    gives. CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; float32 or float64.
    """
    k, _, c_in, kh, kw = w.shape
    if x.ndim != 4 or x.shape[1] != k * c_in or x.shape[2] < kh or x.shape[3] < kw:
        raise ValueError(f"x must be (B, K*C={k * c_in}, H >= {kh}, W >= {kw}) for w of shape {tuple(w.shape)}, got {tuple(x.shape)}")
    if bias is not None and bias.shape != w.shape[:2]:
        raise ValueError(f"bias must be (K, C') = {tuple(w.shape[:2])}, got {tuple(bias.shape)}")
    kinds = {(t.dtype, t.device) for t in (x, w, bias) if t is not None}
    if len(kinds) > 1:
        raise ValueError(f"x, w and bias must share one dtype and device, got {sorted(map(str, kinds))}")
    return StackedConv2d.apply(x, w, bias)
