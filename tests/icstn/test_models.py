"""icstn.models: the paper's variants, their capacities and their behaviour."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from icstn import models, warps
from tests.conftest import PAPER_RESULTS, REPO


def paper_capacities():
    with open(PAPER_RESULTS) as f:
        return {
            (r["dataset"], r["model"] + (f"({r['setting']})" if r["setting"] else "")): int(r["capacity"])
            for r in csv.DictReader(f)
            if r["capacity"]
        }


def test_every_paper_row_is_registered():
    with open(PAPER_RESULTS) as f:
        rows = {(r["dataset"], r["model"] + (f"({r['setting']})" if r["setting"] else "")) for r in csv.DictReader(f)}
    assert rows == set(models.REGISTRY)


@pytest.mark.parametrize("key,expected", sorted(paper_capacities().items()))
def test_capacity_equals_paper(key, expected):
    assert models.capacity(models.get_config(*key)) == expected


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_cli_csv_agrees_with_paper():
    out = subprocess.run(
        [sys.executable, "-m", "icstn", "models", "--format", "csv"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    rows = list(csv.DictReader(out.splitlines()))
    assert len(rows) == len(models.REGISTRY)
    got = {(r["experiment"], r["model"]): int(r["parameters"]) for r in rows}
    for key, expected in paper_capacities().items():
        assert got[key] == expected


def test_unknown_model():
    with pytest.raises(ValueError, match=r"unknown mnist model 'IC-STN-9\(c\)'; allowed: \['CNN\(a\)'"):
        models.get_config("mnist", "IC-STN-9(c)")
    with pytest.raises(ValueError, match="unknown experiment 'svhn'"):
        models.model_names("svhn")
    with pytest.raises(ValueError, match=f"IC-STN-N, 1 <= N <= {models.MAX_WARPS}"):
        models.get_config("mnist", "IC-STN-0(a)")


def test_any_unroll_count():
    cfg = models.get_config("mnist", "IC-STN-8(b)")
    assert cfg.n_warps == 8 and cfg.predictor == "FC(8)"
    assert models.capacity(cfg) == models.capacity(models.get_config("mnist", "IC-STN-2(b)"))


def batch(cfg, k=2, b=3, scale=0.1):
    g = torch.Generator().manual_seed(0)
    source = torch.rand(k, b, cfg.channels, cfg.size, cfg.size, generator=g)
    p = torch.randn(k, b, warps.WARP_DOF[cfg.warp], generator=g) * scale
    return source, p


class TestAlignNet:
    @pytest.mark.parametrize("name", models.model_names("mnist"))
    def test_shapes(self, name):
        cfg = models.get_config("mnist", name)
        source, p = batch(cfg)
        out = models.AlignNet(cfg, [0, 1])(source, p, keep_steps=True)
        assert out.logits.shape == (2, 3, 10) and out.p.shape == (2, 3, 8)
        assert len(out.steps) == 1 + (cfg.n_warps if cfg.family != "cnn" else 0)

    def test_icstn_starts_at_identity_and_keeps_geometry(self):
        cfg = models.get_config("mnist", "IC-STN-4(a)")
        source, p = batch(cfg)
        out = models.AlignNet(cfg, [0, 1])(source, p, keep_steps=True)
        assert torch.allclose(out.p, p, atol=1e-6)  # last predictor layer starts at zero
        assert torch.allclose(out.steps[-1], out.steps[0], atol=1e-6)

    def test_test_time_unrolls(self):
        cfg = models.get_config("planar", "IC-STN-2")
        net = models.AlignNet(cfg, [0])
        source, p = batch(cfg, k=1)
        assert len(net(source, p, n_warps=6, keep_steps=True).steps) == 7
        with pytest.raises(ValueError, match="n_warps must be >= 1, got 0"):
            net(source, p, n_warps=0)
        stn = models.AlignNet(models.get_config("mnist", "c-STN-2(a)"), [0])
        with pytest.raises(ValueError, match="only IC-STN"):
            stn(*batch(stn.cfg, k=1), n_warps=3)

    def test_models_are_independent(self):
        cfg = models.get_config("mnist", "STN(a)")
        both = models.AlignNet(cfg, [3, 4])
        alone = models.AlignNet(cfg, [4])
        for a, b in zip(both.parameters(), alone.parameters()):
            assert torch.equal(a[1], b[0])
        source, p = batch(cfg)
        for net in (both, alone):  # the zero-initialised last layer hides the predictor
            for w in net.predictors[0].weights[-1:]:
                torch.nn.init.normal_(w, std=0.01)
        alone.predictors[0].weights[-1].data.copy_(both.predictors[0].weights[-1].data[1:])
        out_both = both(source, p)
        out_alone = alone(source[1:], p[1:])
        assert torch.allclose(out_both.logits[1], out_alone.logits[0], atol=1e-5)

    def test_bad_parameter_shape(self):
        net = models.AlignNet(models.get_config("mnist", "IC-STN-2(b)"), [0, 1])
        source, p = batch(net.cfg)
        with pytest.raises(ValueError, match=r"p_init must have shape \(K=2, B, D\)"):
            net(source, p[0])


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_conv_gemm_equals_the_grouped_convolution():
    """K models' convolutions as one batched matmul: the grouped convolution's values and gradients."""
    from icstn.layers import conv_gemm

    g = torch.Generator().manual_seed(0)
    k, c_in, c_out, b = 3, 2, 4, 5
    x = torch.randn(b, k * c_in, 11, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(k, c_out, c_in, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(k, c_out, generator=g, dtype=torch.float64, requires_grad=True)
    fast = conv_gemm(x, w, bias)
    grouped = torch.nn.functional.conv2d(x, w.flatten(0, 1), bias.flatten(), groups=k)
    assert fast.shape == grouped.shape == (b, k * c_out, 9, 5)
    assert torch.allclose(fast, grouped, atol=1e-12)
    probe = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((out * probe).sum(), (x, w, bias)) for out in (fast, grouped)]
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(*grads))
    shapes = [(2, 2 * c_in, 6, 7), (2, c_out, c_in, 3, 5), (2, c_out)]  # two models, a small image
    small = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(conv_gemm, small)


def test_a_model_trains_alike_with_any_convolution(monkeypatch):
    from icstn import layers

    cfg = models.get_config("mnist", "IC-STN-2(a)")
    source, p = batch(cfg, scale=0.3)
    outs = []
    for conv in ("grouped", "gemm", "rows"):
        monkeypatch.setitem(layers.CONV, "cpu", conv)
        net = models.AlignNet(cfg, [0, 1])
        out = net(source, p)
        out.logits.sum().backward()
        outs.append((out.logits.detach(), [q.grad for q in net.parameters()]))
    (a, grads_a), *others = outs
    for b, grads_b in others:
        assert torch.allclose(a, b, atol=1e-5)
        assert all(torch.allclose(x, y, atol=1e-4, rtol=1e-4) for x, y in zip(grads_a, grads_b))


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_cli_trains_a_model_with_the_init_it_names(data_root, tmp_path):
    def train(*extra):
        cmd = [sys.executable, "-m", "icstn", "train", "--experiment", "mnist", "--model", "CNN(b)", "--iterations", "3",
               "--seeds", "0", "1", "--test-samples", "100", "--data", str(data_root / "processed"), *extra]  # fmt: skip
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)

    code, he = train("--checkpoint", str(tmp_path / "cnn.pt")), train("--init", "he")
    assert code.returncode == 0 and he.returncode == 0, code.stderr[-2000:] + he.stderr[-2000:]
    rows = [json.loads(line) for line in code.stdout.splitlines()]
    assert [(r["seed"], r["iterations"], r["sigma_px"]) for r in rows] == [(0, 3, 3.5), (1, 3, 3.5)]
    assert all(0.0 <= r["test_error"] <= 100.0 for r in rows) and (tmp_path / "cnn.pt").is_file()
    losses = lambda out: [json.loads(line)["test_loss"] for line in out.splitlines()]  # noqa: E731
    assert losses(he.stdout) != losses(code.stdout)  # other weights: the init was applied
    wrong = train("--init", "kaiming")
    assert wrong.returncode == 2 and "error: unknown mnist init 'kaiming'; allowed: ['code', 'he']" in wrong.stderr
