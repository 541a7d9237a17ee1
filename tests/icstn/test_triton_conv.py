"""The Triton convolution (``icstn.triton_conv``) against ``F.conv2d`` and autograd, in float64,
on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set per test); and each launch
of the paper's layers compiled for a Hopper GPU, which needs no GPU.

The interpreter runs every kernel program in Python, about a millisecond per tile operation,
and the FMA path loops over every tap of every channel: the shapes are small, and the gradients
use small kernels (a 7x7 input gradient of 8 channels takes 20 s here). It ignores TF32, accepts
code the compiler refuses (hence the compile test), and measures nothing: the TF32 tolerances and
the GPU checks are in tests/icstn/test_cuda.py, the speed in benchmarks/conv_decision.py.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from icstn import layers, triton_conv
from tests.conftest import REPO


def _triton_version() -> tuple[int, ...] | None:
    if importlib.util.find_spec("triton") is None:
        return None
    import triton

    return tuple(int(part) for part in triton.__version__.split(".")[:2])


# Interpreters before 3.7 cannot loop over a kernel argument (range(C_IN)); the compiler can.
needs_triton = pytest.mark.skipif(
    (_triton_version() or (0,)) < (3, 7), reason="needs triton >= 3.7 for its interpreter (pip install -e .[triton])"
)


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter for the kernels of this test (they are wrapped for it on first use)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def tensors(b, k, c_in, c_out, h, w, kh, kw, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, k * c_in, h, w), (k, c_out, c_in, kh, kw), (k, c_out), (b, k * c_out, h - kh + 1, w - kw + 1)]
    x, weight, bias, probe = (torch.randn(s, generator=g, dtype=torch.float64) for s in shapes)
    return x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), probe


def reference(x, weight, bias=None):
    return F.conv2d(x, weight.flatten(0, 1), None if bias is None else bias.flatten(), groups=weight.shape[0])


def assert_close(got, want):
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), f"max error {(got - want).abs().max().item():.3g}"


@needs_triton
def test_forward_at_the_paper_kernel_size(interpret):
    """7x7, 4 -> 8 channels per model, as in IC-STN-4(a)'s second layer: the FMA path."""
    x, weight, bias, _ = tensors(b=4, k=3, c_in=4, c_out=8, h=12, w=12, kh=7, kw=7)
    with torch.no_grad():
        assert_close(triton_conv.conv2d_stacked(x, weight, bias), reference(x, weight, bias))


GRAD_CASES = {  # (B, K, C, C', H, W, kh, kw), and whether tl.dot runs the forward and input gradient
    "fma": ((4, 3, 4, 8, 8, 7, 3, 2), False),
    "dot": ((4, 3, 4, 8, 8, 7, 3, 2), True),
    "one input channel": ((2, 2, 1, 4, 9, 8, 5, 5), False),
}


@needs_triton
@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_equal_autograd(name, interpret, monkeypatch):
    """Forward, input, weight and bias gradients; a kernel wider than tall (the padding of the
    input gradient differs per axis) and positions that fill no whole tile."""
    shape, dot = GRAD_CASES[name]
    monkeypatch.setattr(triton_conv, "DOT_MIN_CHANNELS", 1 if dot else 16)
    x, weight, bias, probe = tensors(*shape)
    out, want = triton_conv.conv2d_stacked(x, weight, bias), reference(x, weight, bias)
    assert_close(out, want)
    got = torch.autograd.grad((out * probe).sum(), (x, weight, bias))
    expected = torch.autograd.grad((want * probe).sum(), (x, weight, bias))
    for g, e in zip(got, expected):
        assert_close(g, e)


@needs_triton
def test_weight_gradient_is_deterministic_for_any_split(interpret):
    """The partial sums over chunks of positions add up to the same gradient, in a fixed order."""
    x, weight, _, dy = tensors(b=3, k=2, c_in=2, c_out=3, h=9, w=9, kh=3, kw=3)
    want = torch.autograd.grad((reference(x, weight) * dy).sum(), weight)[0]
    for chunks in (1, 2, 5):
        first = triton_conv._weight_grad(x.detach(), dy, weight.shape, chunks)
        assert_close(first, want)
        assert torch.equal(first, triton_conv._weight_grad(x.detach(), dy, weight.shape, chunks))


@needs_triton
def test_a_network_trains_alike_with_the_triton_convolution(interpret, monkeypatch):
    """icstn.layers.CONV chooses it; the CPU's channels-last input is taken too. Float32."""
    net = layers.StackedNet("conv(3x3;2)-conv(3x3;3)-P-FC(4)", (1, 8, 8), k=2)
    net.init_([0, 1], "he")
    x = torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)  # (K, B, C, H, W)
    outs = []
    for conv in ("grouped", "triton"):
        monkeypatch.setitem(layers.CONV, "cpu", conv)
        out = net(x)
        outs.append((out, torch.autograd.grad(out.square().sum(), [x, *net.parameters()])))
    (a, grads_a), (b, grads_b) = outs
    assert torch.allclose(a, b, atol=1e-5)
    assert all(torch.allclose(g, h, atol=1e-5, rtol=1e-4) for g, h in zip(grads_a, grads_b))


@needs_triton
def test_bad_input_is_refused_before_any_launch(monkeypatch):
    x, weight, bias, _ = tensors(b=2, k=2, c_in=2, c_out=3, h=5, w=5, kh=3, kw=3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1"):
        triton_conv.conv2d_stacked(x, weight, bias)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="float32 or float64"):
        triton_conv.conv2d_stacked(x.half(), weight.half(), bias.half())
    with pytest.raises(ValueError, match=r"x must be \(B, K\*C=4, H >= 3, W >= 3\)"):
        triton_conv.conv2d_stacked(x[:, :3], weight, bias)
    with pytest.raises(ValueError, match=r"bias must be \(K, C'\) = \(2, 3\)"):
        triton_conv.conv2d_stacked(x, weight, bias[:, :2])
    with pytest.raises(ValueError, match="x, w and bias must share one dtype and device"):
        triton_conv.conv2d_stacked(x.float(), weight, bias)


def _bundled_ptxas() -> bool:
    spec = importlib.util.find_spec("triton")
    return spec is not None and any((Path(p) / "backends/nvidia/bin/ptxas").is_file() for p in spec.submodule_search_locations)


@pytest.fixture
def conv_fp32_precision():
    """Sets the cuDNN convolutions' float32 precision, which the Triton kernels follow, for one test."""
    before = torch.backends.cudnn.conv.fp32_precision
    yield lambda value: setattr(torch.backends.cudnn.conv, "fp32_precision", value)
    torch.backends.cudnn.conv.fp32_precision = before


COMPILE_CASES = {  # what the paper's layers launch at K = 128, batch 100: shape (C, C', kh, kw, H, W), direction, float32 precision
    "6->24 forward, tl.dot TF32": ((6, 24, 7, 7, 30, 30), "forward", "tf32"),
    "4->8 forward, FMA": ((4, 8, 7, 7, 22, 22), "forward", "tf32"),
    "6->24 input gradient, FMA": ((6, 24, 7, 7, 30, 30), "input", "tf32"),
    "6->24 input gradient, tl.dot exact": ((6, 24, 7, 7, 30, 30), "input", "ieee"),
    "6->24 weight gradient, exact": ((6, 24, 7, 7, 30, 30), "weight", "ieee"),
}


@pytest.mark.skipif(not _bundled_ptxas(), reason="needs triton, with the CUDA compiler (ptxas) it ships")
@pytest.mark.parametrize("name", COMPILE_CASES)
def test_kernels_compile_for_a_hopper_gpu(name, monkeypatch, conv_fp32_precision):
    """The interpreter runs code the compiler may refuse: each launch is compiled for sm_90 down to
    machine code by the ptxas that triton ships, no GPU needed, on the path it should take."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    (c, c_out, kh, kw, h, w), direction, precision = COMPILE_CASES[name]
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    conv_fp32_precision(precision)
    monkeypatch.setattr(triton_conv, "DOT_MIN_CHANNELS", 1 if "tl.dot" in name else 16)
    k, b = 128, 100
    shapes = [(b, k * c, h, w), (k, c_out, c, kh, kw), (k, c_out), (b, k * c_out, h - kh + 1, w - kw + 1)]
    x, weight, bias, dy = (torch.empty(s, device="meta") for s in shapes)  # shapes only: nothing is allocated
    launch = {
        "forward": lambda: triton_conv._conv_launch(x, weight, bias, transposed=False),
        "input": lambda: triton_conv._conv_launch(dy, weight, None, transposed=True),
        "weight": lambda: triton_conv._weight_grad_launch(x, dy, weight.shape),
    }[direction]()
    fn = triton.jit({"conv": triton_conv._conv_kernel, "wgrad": triton_conv._wgrad_kernel}[launch.kernel])
    meta = dict(launch.meta)
    options = {name: meta.pop(name) for name in ("num_warps", "num_stages") if name in meta}  # launch options, not constexprs
    signature = {n: "*fp32" if isinstance(v, torch.Tensor) else "i32" for n, v in zip(fn.arg_names, launch.args)}
    signature |= dict.fromkeys(meta, "constexpr")
    kernel = triton.compile(ASTSource(fn, signature, meta), target=GPUTarget("cuda", 90, 32), options=options)
    assert kernel.asm["cubin"]  # ptxas accepted it
    ptx = kernel.asm["ptx"]
    if meta.get("DOT", True):
        assert ("mma" in ptx) == (precision == "tf32")  # tensor cores exactly when TF32 is asked for
    assert "fma.rn.f32" in ptx or precision == "tf32"


def test_an_unknown_convolution_is_named(monkeypatch):
    monkeypatch.setitem(layers.CONV, "cpu", "fft")
    net = layers.StackedNet("conv(3x3;2)-FC(4)", (1, 5, 5), k=1)
    with pytest.raises(ValueError, match=r"icstn.layers.CONV\['cpu'\] is 'fft'; allowed: \['gemm', 'grouped', 'rows', 'triton'\]"):
        net(torch.zeros(1, 1, 1, 5, 5))


def test_icstn_imports_without_triton():
    """triton is optional: the package imports without it, and choosing the Triton convolution says what is missing."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # import triton now raises ImportError
        "import torch, icstn.models\nfrom icstn import layers\n"
        "layers.CONV['cpu'] = 'triton'\n"
        "try:\n    layers.StackedNet('conv(3x3;2)-FC(4)', (1, 5, 5), 1)(torch.zeros(1, 1, 1, 5, 5))\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "the 'triton' convolution needs the triton package" in run.stdout
