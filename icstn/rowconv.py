"""K models' one-input-channel convolutions as batched matmuls over image rows (the CPU's fast path).

A 'valid' correlation of a one-channel image by a (kh, kw) kernel is, for every output row, the sum
over the kernel's rows i of input row y + i times a banded (Toeplitz) matrix holding kernel row i.
Stacking the kh input rows of each output row gives one matmul per model:

    rows (K, B*Ho, kh*W) @ band (K, kh*W, C'*Wo) -> (K, B*Ho, C'*Wo)

The rows copy the input kh times (an unfolded-patch matmul copies it kh*kw times), and the band is
W / kw mostly zeros: about 3x the multiply-adds of the convolution, in a large matmul. On one CPU
thread oneDNN's grouped convolution with one input channel per group runs its backward at about
1 GFLOP/s; this runs both directions of the MNIST classifier's conv(9x9;3) 3.2x faster at K = 3
(measured: ``python -m benchmarks.throughput --device cpu``).

Summation order: each output is a matmul's sum over kh*W products, kw*kh of them the kernel's and
the rest exact zeros, in the BLAS's order (oneDNN sums the kh*kw products in its own). The input
gradient adds the kh rows' contributions in order of i; the weight gradient sums over the batch and
the output rows in one matmul, then over the output columns.
"""

from __future__ import annotations

import torch


def _band_view(t: torch.Tensor, kw: int) -> torch.Tensor:
    """(K, kh, W, C', Wo) band -> (K, kh, kw, C', Wo) view of its diagonals: [k, i, j, o, x] is [k, i, x + j, o, x]."""
    k, kh, _, c_out, wo = t.shape
    s = t.stride()
    return t.as_strided((k, kh, kw, c_out, wo), (s[0], s[1], s[2], s[3], s[2] + s[4]))


def band(w: torch.Tensor, width: int) -> torch.Tensor:
    """Kernels (K, C', kh, kw) -> (K, kh*W, C'*Wo): x_row (W) @ band[k][i*W:(i+1)*W] correlates a row with w[k, :, i]."""
    k, c_out, kh, kw = w.shape
    wo = width - kw + 1
    t = w.new_zeros(k, kh, width, c_out, wo)
    _band_view(t, kw).copy_(w.permute(0, 2, 3, 1).unsqueeze(-1).expand(k, kh, kw, c_out, wo))
    return t.view(k, kh * width, c_out * wo)


def rows(x: torch.Tensor, kh: int) -> torch.Tensor:
    """Images (B, K, H, W), any strides -> (K, B*Ho, kh*W): each output row's kh input rows, copied."""
    b, k, h, w = x.shape
    s = x.stride()
    return x.as_strided((k, b, h - kh + 1, kh, w), (s[1], s[0], s[2], s[2], s[3])).reshape(k, -1, kh * w)


class RowConv(torch.autograd.Function):
    """x (B, K, H, W), w (K, C', 1, kh, kw), bias (K, C') -> (B, K*C', Ho, Wo), as ``F.conv2d(x,
    w.flatten(0, 1), bias.flatten(), groups=K)``; the input gradient only where x requires it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, k, h, wd = x.shape
        _, c_out, _, kh, kw = w.shape
        ho, wo = h - kh + 1, wd - kw + 1
        xr = rows(x, kh)  # (K, B*Ho, kh*W)
        bias_row = bias.unsqueeze(-1).expand(k, c_out, wo).reshape(k, 1, c_out * wo)
        out = torch.baddbmm(bias_row, xr, band(w[:, :, 0], wd))  # (K, B*Ho, C'*Wo)
        ctx.save_for_backward(xr, w)
        ctx.shape = (b, k, h, wd)
        return out.view(k, b, ho, c_out, wo).permute(1, 0, 3, 2, 4).reshape(b, k * c_out, ho, wo)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        xr, w = ctx.saved_tensors
        b, k, h, wd = ctx.shape
        _, c_out, _, kh, kw = w.shape
        ho, wo = h - kh + 1, wd - kw + 1
        g = grad.reshape(b, k, c_out, ho, wo)
        g_rows = g.permute(1, 0, 3, 2, 4).reshape(k, b * ho, c_out * wo)  # (K, B*Ho, C'*Wo)
        dx = None
        if ctx.needs_input_grad[0]:
            d_rows = torch.bmm(g_rows, band(w[:, :, 0], wd).mT).view(k, b, ho, kh, wd)
            dx = grad.new_zeros(k, b, h, wd)
            for i in range(kh):  # input row y + i gets output row y's share through kernel row i
                dx[:, :, i : i + ho] += d_rows[:, :, :, i]
            dx = dx.transpose(0, 1)  # (B, K, H, W)
        dw = None
        if ctx.needs_input_grad[1]:
            d_band = torch.bmm(xr.mT, g_rows).view(k, kh, wd, c_out, wo)  # (K, kh*W, C'*Wo)
            dw = _band_view(d_band, kw).sum(-1).permute(0, 3, 1, 2).unsqueeze(2)  # (K, C', 1, kh, kw)
        db = g.sum((0, 3, 4)) if ctx.needs_input_grad[2] else None
        return dx, dw, db


def conv_rows(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K models' one-input-channel 'valid' convolutions: x (B, K, H, W), w (K, C', 1, kh, kw),
    bias (K, C') -> (B, K*C', Ho, Wo)."""
    if w.shape[2] != 1 or x.shape[1] != w.shape[0]:
        raise ValueError(f"conv_rows takes one input channel per model: x {tuple(x.shape)}, w {tuple(w.shape)}")
    return RowConv.apply(x, w, bias)
