"""The fast path on CUDA: the captured step equals the plain path, and the CPU, to float tolerance.

Skipped without a CUDA device; benchmarks/device_check.sh runs it on a GPU machine. Synthetic
data (``icstn.data.synthetic``): no dataset needs to travel with it.
"""

import pytest
import torch

from icstn import models
from icstn.data import synthetic
from icstn.step import GRAPH_WARMUP
from icstn.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = [
    ("mnist", "IC-STN-4(a)", "homography"),
    ("mnist", "STN(a)", "homography"),
    ("gtsrb", "IC-STN-4", "homography"),
    ("planar", "IC-STN-2", "affine"),
]
STEPS = GRAPH_WARMUP + 9  # eager warm-up, the capture, then replays


def make(experiment, name, noise_warp, device, **kw):
    cfg = TrainConfig(batch_size=32, lr_geometric=1e-4, lr_classifier=1e-2, noise_warp=noise_warp, **{"tf32": False, **kw})
    return Trainer(models.get_config(experiment, name), cfg, synthetic(experiment, 500), [0, 1, 2, 3], [1.0, 2.5, 3.5, 5.0], device)


def train(t: Trainer, steps: int = STEPS) -> list[torch.Tensor]:
    return [t.train_step().clone().cpu() for _ in range(steps)]


def assert_same(a: Trainer, b: Trainer, atol: float) -> None:
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(x.cpu(), y.cpu(), rtol=1e-4, atol=atol), name


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_graph_equals_plain_path(case):
    fast, plain = make(*case, "cuda", cuda_graph=True), make(*case, "cuda", cuda_graph=False)
    fast_losses, plain_losses = train(fast), train(plain)
    assert fast.stepper.graph is not None and plain.stepper.graph is None
    assert torch.allclose(torch.stack(fast_losses), torch.stack(plain_losses), rtol=1e-4, atol=1e-5)
    assert_same(fast, plain, atol=1e-5)
    moved = make(*case, "cpu")
    assert max((x - y.cpu()).abs().max().item() for x, y in zip(moved.model.parameters(), fast.model.parameters())) > 1e-6


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_cuda_equals_cpu(case):
    """The draws are device-independent (icstn.rng), so the same trial trains alike on both."""
    gpu, cpu = make(*case, "cuda"), make(*case, "cpu")
    assert torch.allclose(torch.stack(train(gpu)), torch.stack(train(cpu)), rtol=1e-3, atol=1e-4)
    assert_same(gpu, cpu, atol=1e-4)


def test_graph_resumes_from_a_checkpoint(tmp_path):
    case = CASES[0]
    straight = make(*case, "cuda")
    train(straight, 2 * STEPS)
    first = make(*case, "cuda")
    train(first, STEPS)
    first.save(tmp_path / "c.pt")
    resumed = make(*case, "cuda")
    resumed.load(tmp_path / "c.pt")
    train(resumed, STEPS)
    assert resumed.step == straight.step and resumed.stepper.graph is not None
    assert_same(resumed, straight, atol=1e-5)


def test_tf32_stays_close():
    exact, tf32 = make(*CASES[0], "cuda"), make(*CASES[0], "cuda", tf32=True)
    assert torch.allclose(torch.stack(train(exact)), torch.stack(train(tf32)), rtol=2e-2, atol=2e-3)
