"""The CPU's fast path: icstn.rowconv and icstn.layers.StackedLinear against the plain ops in every direction,
the unread last warp left out, and the benchmark's baseline selecting the path before it."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.throughput import baseline_path
from icstn import layers, models, noise, rowconv, warps
from icstn.data import synthetic


def tensors(*shapes, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def grads(out, inputs, seed=1):
    """Gradients of a fixed random projection of ``out`` with respect to those of ``inputs`` that require them."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    needed = [t for t in inputs if t.requires_grad]
    return torch.autograd.grad((out * weight).sum(), needed)


class TestBand:
    def test_a_row_times_its_band_is_the_correlation(self):
        x, w = torch.randn(1, 1, 3, 11, dtype=torch.float64), torch.randn(1, 2, 3, 4, dtype=torch.float64)
        band = rowconv.band(w, 11)  # (1, 3*11, 2*8)
        out = (x.reshape(1, 33) @ band[0]).view(2, 8)  # the one output row
        assert torch.allclose(out, F.conv2d(x, w[0].unsqueeze(1))[0, :, 0])


class TestRowConv:
    @pytest.mark.parametrize(("k", "c_out", "kh", "kw", "h", "w"), [(1, 3, 9, 9, 28, 28), (3, 4, 7, 7, 12, 10), (2, 2, 3, 5, 6, 9)])
    def test_matches_grouped_conv2d_in_every_direction(self, k, c_out, kh, kw, h, w):
        x, wt, b = tensors((5, k, h, w), (k, c_out, 1, kh, kw), (k, c_out))
        out = rowconv.conv_rows(x, wt, b)
        ref = F.conv2d(x, wt.flatten(0, 1), b.flatten(), groups=k)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
        for got, expected in zip(grads(out, (x, wt, b)), grads(ref, (x, wt, b))):
            assert torch.allclose(got, expected, atol=1e-11)

    def test_channels_last_input(self):
        x, wt, b = tensors((4, 2, 9, 8), (2, 3, 1, 3, 3), (2, 3))
        out = rowconv.conv_rows(x.contiguous(memory_format=torch.channels_last), wt, b)
        assert torch.allclose(out, F.conv2d(x, wt.flatten(0, 1), b.flatten(), groups=2), atol=1e-12)

    def test_no_input_gradient_for_data(self):
        x, wt, b = tensors((4, 2, 9, 8), (2, 3, 1, 3, 3), (2, 3))
        x = x.detach()  # data: only the weights learn
        dw, db = grads(rowconv.conv_rows(x, wt, b), (x, wt, b))
        dw_ref, db_ref = grads(F.conv2d(x, wt.flatten(0, 1), b.flatten(), groups=2), (x, wt, b))
        assert torch.allclose(dw, dw_ref.view_as(dw), atol=1e-12) and torch.allclose(db, db_ref, atol=1e-12)

    def test_gradcheck(self):
        x, wt, b = tensors((2, 2, 5, 6), (2, 2, 1, 3, 2), (2, 2))
        assert torch.autograd.gradcheck(rowconv.conv_rows, (x, wt, b))

    def test_several_input_channels_are_refused(self):
        with pytest.raises(ValueError, match=r"one input channel per model: x \(2, 4, 5, 5\), w \(2, 3, 2, 3, 3\)"):
            rowconv.conv_rows(torch.zeros(2, 4, 5, 5), torch.zeros(2, 3, 2, 3, 3), torch.zeros(2, 3))


class TestConvRowsChoice:
    def test_each_layer_by_its_formulation(self):
        """CONV 'rows': the one-channel first layer by the row matmuls, the next grouped; the net as by 'grouped'."""
        net = layers.StackedNet("conv(5x5;4)-conv(3x3;6)-P-FC(8)", (1, 14, 14), k=2).double()
        net.init_([0, 1], "he")
        x = torch.randn(2, 3, 1, 14, 14, dtype=torch.float64)
        outs = []
        for conv in ("grouped", "rows"):
            layers.CONV["cpu"], saved = conv, layers.CONV["cpu"]
            try:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    out = net(x)
                    (out * torch.arange(8.0, dtype=torch.float64)).sum().backward()
            finally:
                layers.CONV["cpu"] = saved
            outs.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
            net.zero_grad()
            ops = {e.key for e in prof.key_averages()}
            assert ("RowConv" in ops) == (conv == "rows") and "aten::convolution_backward" in ops  # the 4 -> 6 layer stays grouped
        (a, grads_a), (b, grads_b) = outs
        assert torch.allclose(a, b, atol=1e-12) and all(torch.allclose(p, q, atol=1e-11) for p, q in zip(grads_a, grads_b))


class TestStackedLinear:
    @pytest.mark.parametrize("x_grad", [True, False])
    def test_matches_baddbmm(self, x_grad):
        x, w, b = tensors((3, 7, 20), (3, 20, 6), (3, 6))
        x.requires_grad_(x_grad)
        out = layers.StackedLinear.apply(x, w, b)
        ref = torch.baddbmm(b.unsqueeze(1), x, w)
        assert torch.allclose(out, ref, atol=1e-12)
        for got, expected in zip(grads(out, (x, w, b)), grads(ref, (x, w, b))):
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)

    def test_gradcheck(self):
        assert torch.autograd.gradcheck(layers.StackedLinear.apply, tensors((2, 3, 5), (2, 5, 4), (2, 4)))

    def test_chosen_for_narrow_layers_only(self, monkeypatch):
        net = layers.StackedNet("FC(32)-FC(6)", (1, 4, 4), k=2)
        monkeypatch.setitem(layers.NARROW_LINEAR, "cpu", 16)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            net(torch.randn(2, 3, 1, 4, 4))
        counts = {e.key: e.count for e in prof.key_averages()}
        assert counts.get("StackedLinear") == 1 and counts.get("aten::baddbmm") == 2  # FC(32) plain, FC(6) inside StackedLinear


def op_counts(fn) -> dict[str, int]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


class TestUnreadLastWarp:
    def test_a_planar_model_skips_it_with_the_same_output(self, monkeypatch):
        cfg = models.get_config("planar", "IC-STN-3")
        data = synthetic("planar")
        net = models.AlignNet(cfg, [0, 1])
        source = data.images(data.train_images[:1]).unsqueeze(0)  # (1, 1, C, H, W)
        p = noise.perturb(8, 5.0, cfg.size, cfg.warp, seed=0).view(2, 4, -1)
        outs = {}
        for sample in (False, True):
            monkeypatch.setattr(models, "SAMPLE_UNREAD_LAST_WARP", sample)
            counts = op_counts(lambda key=sample: outs.__setitem__(key, net(source, p, data.ref).p))
            assert counts["aten::grid_sampler_2d"] == 1 + cfg.n_warps - (not sample)
        assert torch.equal(outs[False], outs[True])

    def test_kept_where_it_is_read(self):
        cfg = models.get_config("mnist", "c-STN-1(b)")
        net = models.AlignNet(cfg, [0])
        counts = op_counts(lambda: net(torch.rand(1, 2, 1, 28, 28), torch.zeros(1, 2, 8)))
        assert counts["aten::grid_sampler_2d"] == 2  # the classifier reads the last warp


class TestBaselinePath:
    def test_selects_the_old_path_and_restores_the_fast_one(self):
        cfg = models.get_config("mnist", "STN(b)")
        net = models.AlignNet(cfg, [0])

        def step():
            net(torch.rand(1, 2, 1, 28, 28), torch.zeros(1, 2, 8)).logits.sum().backward()

        before = (dict(warps.GRID), dict(layers.CONV), dict(layers.NARROW_LINEAR), models.SAMPLE_UNREAD_LAST_WARP)
        with baseline_path("cpu"):
            old = op_counts(step)
        new = op_counts(step)
        assert (dict(warps.GRID), dict(layers.CONV), dict(layers.NARROW_LINEAR), models.SAMPLE_UNREAD_LAST_WARP) == before
        assert "aten::affine_grid_generator" in old and "_MatmulGrid" not in old
        assert "aten::mkldnn_convolution" in old and "RowConv" not in old and "StackedLinear" not in old
        assert "aten::affine_grid_generator" not in new and "_MatmulGrid" in new
        assert "RowConv" in new and "StackedLinear" in new and "aten::mkldnn_convolution" not in new
