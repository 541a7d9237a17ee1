"""K independent copies of a small feed-forward network, computed together.

The paper's networks are tiny, so the project trains many of them at once (seeds, noise
levels). Every weight carries a leading model axis K; a convolution of K models is one grouped
convolution (groups=K), one batched matmul over unfolded patches (``conv_gemm``) or Triton
kernels with the models in the launch grid (``icstn.triton_conv``), and a linear layer is one
batched matmul. K = 1 is the ordinary network.

Architecture strings are the paper's own notation, e.g.
``conv(7x7;4)-conv(7x7;8)-P-FC(48)-FC(8)``: 'valid' convolutions with stride 1, P a 2x2
max-pooling, ReLU after every layer but the last.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from icstn import rowconv

#: Grouped convolutions in channels-last memory, per device type. CPU: 2-3x faster (measured).
#: CUDA: no; cuDNN runs a channels-last grouped convolution as one kernel per group plus layout
#: conversions, and the plain layout trained IC-STN-4(a) 1.07x, 1.19x and 1.23x faster at
#: K = 3, 12 and 128 on an H200 (``python -m benchmarks.throughput --layout nchw|nhwc``).
CHANNELS_LAST = {"cpu": True, "cuda": False}  # any other device (meta, in the tests): plain

#: How K models' convolution runs, per device type, one of ``CONVOLUTIONS``: "grouped" (one
#: grouped convolution), "rows" (one-input-channel layers as row matmuls, ``icstn.rowconv``; the
#: others grouped), "gemm" (``conv_gemm``: one batched matmul over the K models) or "triton"
#: (``icstn.triton_conv``: one launch per direction for all K models; CUDA, or the CPU under
#: TRITON_INTERPRET=1). CPU: "rows"; oneDNN's backward of a grouped convolution with one input
#: channel per group runs at about 1 GFLOP/s on one thread, and the row matmuls ran forward and
#: backward of conv(9x9;3) on 1 channel (the MNIST classifier) 3.2x faster and of conv(7x7;4) 2.6x
#: (K = 3, batch 100, 1 thread); with several input channels oneDNN's channels-last convolution
#: is the faster (conv(7x7;8) on 4: its weight gradient 5 ms, unfolded patches 218 ms). CUDA: cuDNN runs
#: a grouped layer of 4 -> 8 channels per group as one kernel per group, the cost that dominates
#: IC-STN-4(a) at K = 128 on an H200. "gemm" lost at every K (H200, run 3); "triton" waits for
#: ``python -m benchmarks.conv_decision`` on a GPU to choose.
CONV = {"cpu": "rows", "cuda": "grouped"}

#: Linear layers of at most this many outputs multiply by their weights transposed in memory
#: (``StackedLinear``), per device type (0: never). MKL's batched matmul of (B, F) by (F, n) with
#: n of 6 to 10 runs 2-3x slower than by the same (n, F) matrix transposed: a planar FC(6) over
#: 2,500 inputs at K = 12 trained 2.1x faster, MNIST's FC(8) over 784 1.8x, FC(10) over 1,200
#: 1.6x; FC(48) and FC(43) 0.9x (1 thread). CUDA: untried, so off.
NARROW_LINEAR = {"cpu": 16, "cuda": 0}

_LAYER = re.compile(r"conv\((\d+)x(\d+);(\d+)\)|(P)|FC\((\d+)\)")


def parse_arch(spec: str) -> list[tuple]:
    """Parse a paper architecture string into ('conv', kh, kw, c), ('pool',), ('fc', n) tuples."""
    layers = []
    for token in spec.split("-"):
        m = _LAYER.fullmatch(token.strip())
        if m is None:
            raise ValueError(f"bad layer {token!r} in architecture {spec!r}; allowed: conv(KxK;C), P, FC(N)")
        if m.group(1):
            layers.append(("conv", int(m.group(1)), int(m.group(2)), int(m.group(3))))
        elif m.group(4):
            layers.append(("pool",))
        else:
            layers.append(("fc", int(m.group(5))))
    if layers[-1][0] != "fc":
        raise ValueError(f"architecture {spec!r} must end with FC(N)")
    return layers


class StackedNet(nn.Module):
    """K copies of the network ``spec``, parameters stacked on a leading model axis.

    Args:
        spec: paper architecture string.
        in_shape: (C, H, W) of one input image.
        k: number of models.
    Shapes: forward maps (K, B, C, H, W) to (K, B, out_features).
    """

    def __init__(self, spec: str, in_shape: tuple[int, int, int], k: int):
        super().__init__()
        self.spec, self.k = spec, k
        self.layers = parse_arch(spec)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        c, h, w = in_shape
        self.convs = []  # (C, C', kh, kw, H, W) of each convolution: its channels, kernel and input size
        flat = None  # feature width once flattened
        for layer in self.layers:
            if layer[0] == "conv":
                _, kh, kw, cout = layer
                if flat is not None:
                    raise ValueError(f"conv after FC in {spec!r}")
                self._add((k, cout, c, kh, kw), (k, cout))
                self.convs.append((c, cout, kh, kw, h, w))
                c, h, w = cout, h - kh + 1, w - kw + 1
                if h < 1 or w < 1:
                    raise ValueError(f"{spec!r} shrinks a {in_shape} input below 1 pixel")
            elif layer[0] == "pool":
                h, w = h // 2, w // 2
            else:
                fin = flat if flat is not None else c * h * w
                self._add((k, fin, layer[1]), (k, layer[1]))
                flat = layer[1]
        self.out_features = flat

    def _add(self, w_shape, b_shape):
        self.weights.append(nn.Parameter(torch.zeros(w_shape)))
        self.biases.append(nn.Parameter(torch.zeros(b_shape)))

    def init_(self, seeds: list[int], scheme: str, std: float = 0.1, zero_last: bool = False) -> None:
        """Initialise model k from its own seed, so that a model's weights do not depend on K.

        Schemes: 'normal' (weights and biases ~ N(0, std), the released MNIST code) or 'he'
        (weights ~ N(0, 2 / fan_in), biases 0). ``zero_last`` zeroes the last layer, so that a
        geometric predictor starts at the identity warp.
        """
        if len(seeds) != self.k:
            raise ValueError(f"need {self.k} seeds, got {len(seeds)}")
        with torch.no_grad():
            for k, seed in enumerate(seeds):
                g = torch.Generator().manual_seed(int(seed))
                for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                    last = i == len(self.weights) - 1
                    fan_in = math.prod(w.shape[2:]) if w.ndim == 5 else w.shape[1]
                    w_std = std if scheme == "normal" else math.sqrt(2 / fan_in)
                    w_k = torch.randn(w.shape[1:], generator=g) * w_std
                    b_k = torch.randn(b.shape[1:], generator=g) * std if scheme == "normal" else torch.zeros(b.shape[1:])
                    if last and zero_last:
                        w_k, b_k = torch.zeros_like(w_k), torch.zeros_like(b_k)
                    w[k].copy_(w_k)
                    b[k].copy_(b_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[:2]
        x = x.transpose(0, 1).reshape(b, -1, *x.shape[3:])  # (B, K*C, H, W): models as groups
        conv = convolution(x.device.type)
        if self.layers[0][0] == "conv" and CHANNELS_LAST.get(x.device.type, False) and conv is not conv_rows:
            x = x.contiguous(memory_format=torch.channels_last)  # conv_rows chooses per layer
        weights = iter(zip(self.weights, self.biases))
        narrow = NARROW_LINEAR.get(x.device.type, 0)
        for i, layer in enumerate(self.layers):
            if layer[0] == "conv":
                w, bias = next(weights)
                x = conv(x, w, bias)  # (B, K*C', H', W')
            elif layer[0] == "pool":
                x = F.max_pool2d(x, 2)
            else:
                w, bias = next(weights)
                if x.ndim == 4:
                    x = x.reshape(b, k, -1).transpose(0, 1)  # (K, B, C*H*W), each model's (C, H, W) order
                x = StackedLinear.apply(x, w, bias) if w.shape[2] <= narrow else torch.baddbmm(bias.unsqueeze(1), x, w)  # (K, B, out)
            if i < len(self.layers) - 1 and layer[0] != "pool":
                x = F.relu(x)
        return x


def conv_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K models' 'valid' convolutions as one batched matmul over unfolded patches.

    x: (B, K*C, H, W), the models as channel groups; w: (K, C', C, kh, kw); bias: (K, C').
    Returns (B, K*C', H', W'), what ``F.conv2d(x, w.flatten(0, 1), bias.flatten(), groups=K)``
    gives, but as one launch for all K models, at the price of the unfolded patches in memory.
    """
    b, _, h, wd = x.shape
    k, c_out, c_in, kh, kw = w.shape
    ho, wo = h - kh + 1, wd - kw + 1
    cols = F.unfold(x, (kh, kw))  # (B, K*C*kh*kw, H'*W'): model-major, then channel, then offset
    cols = cols.view(b, k, c_in * kh * kw, ho * wo).permute(1, 0, 3, 2).reshape(k, b * ho * wo, -1)
    out = torch.baddbmm(bias.unsqueeze(1), cols, w.flatten(2).transpose(1, 2))  # (K, B*H'*W', C')
    return out.view(k, b, ho, wo, c_out).permute(1, 0, 4, 2, 3).reshape(b, k * c_out, ho, wo)


def conv_grouped(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K models' convolutions as one grouped convolution (cuDNN's on CUDA): x (B, K*C, H, W),
    w (K, C', C, kh, kw), bias (K, C') -> (B, K*C', H', W')."""
    return F.conv2d(x, w.flatten(0, 1), bias.flatten(), groups=w.shape[0])


def conv_rows(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One-input-channel layers as row matmuls (``icstn.rowconv``), the others grouped, in channels-last
    memory where ``CHANNELS_LAST`` says: x (B, K*C, H, W), w (K, C', C, kh, kw), bias (K, C') -> (B, K*C', H', W')."""
    if w.shape[2] == 1:
        return rowconv.conv_rows(x, w, bias)
    if CHANNELS_LAST.get(x.device.type, False):
        x = x.contiguous(memory_format=torch.channels_last)
    return conv_grouped(x, w, bias)


def conv_triton(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``icstn.triton_conv.conv2d_stacked``, imported where chosen: triton is an optional dependency."""
    from icstn.triton_conv import conv2d_stacked

    return conv2d_stacked(x, w, bias)


#: The ways K models' convolution can run, by the names ``CONV`` takes; all map
#: x (B, K*C, H, W), w (K, C', C, kh, kw), bias (K, C') to (B, K*C', H', W').
CONVOLUTIONS = {"grouped": conv_grouped, "rows": conv_rows, "gemm": conv_gemm, "triton": conv_triton}


def convolution(device_type: str):
    """The convolution ``CONV`` chooses for a device type (any other type: grouped)."""
    name = CONV.get(device_type, "grouped")
    if name not in CONVOLUTIONS:
        raise ValueError(f"icstn.layers.CONV[{device_type!r}] is {name!r}; allowed: {sorted(CONVOLUTIONS)}")
    return CONVOLUTIONS[name]


class StackedLinear(torch.autograd.Function):
    """K models' linear layers, x (K, B, F), w (K, F, n), bias (K, n) -> (K, B, n), as
    ``torch.baddbmm(bias.unsqueeze(1), x, w)``, with the weights transposed in memory in every
    product (see ``NARROW_LINEAR``); the same sums, in the BLAS's order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(bias.unsqueeze(1), x, w.mT.contiguous().mT)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        dx = torch.bmm(grad, w.mT) if ctx.needs_input_grad[0] else None  # (K, B, F)
        dw = torch.bmm(grad.mT, x).mT if ctx.needs_input_grad[1] else None  # (K, n, F) in memory, (K, F, n) in shape
        return dx, dw, grad.sum(1) if ctx.needs_input_grad[2] else None
