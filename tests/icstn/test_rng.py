"""icstn.rng: counter-based draws, exact 32-bit arithmetic, independent of K."""

import math

import pytest
import torch

from icstn import rng


def lowbias32(x: int) -> int:
    """The reference mixer in Python's unbounded integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_matches_exact_integer_reference():
    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    assert rng.hash32(torch.tensor(xs)).tolist() == [lowbias32(x) for x in xs]


def test_row_depends_on_its_seed_only():
    one = rng.bits(torch.tensor([7]), 3, (5, 2), rng.BATCH)
    many = rng.bits(torch.tensor([1, 7, 9]), torch.tensor(3), (5, 2), rng.BATCH)
    assert many.shape == (3, 5, 2) and torch.equal(many[1], one[0])


def test_streams_steps_and_seeds_differ():
    seeds = torch.tensor([0, 1])
    a = rng.bits(seeds, 0, (100,), rng.BATCH)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, rng.bits(seeds, 1, (100,), rng.BATCH))
    assert not torch.equal(a, rng.bits(seeds, 0, (100,), rng.NOISE))
    assert torch.equal(a, rng.bits(seeds, 0, (100,), rng.BATCH))


def test_distributions():
    seeds = torch.arange(4)
    u = rng.uniform(seeds, 0, (50000,), rng.NOISE)
    assert 0 < u.min().item() and u.max().item() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005) and u.var().item() == pytest.approx(1 / 12, abs=0.002)
    z = rng.normal(seeds, 0, (50000,), rng.NOISE).double()
    assert z.mean().item() == pytest.approx(0, abs=0.01) and z.std().item() == pytest.approx(1, abs=0.01)
    assert (z.pow(4).mean() / z.pow(2).mean() ** 2).item() == pytest.approx(3, abs=0.1)  # Gaussian kurtosis
    assert abs(torch.corrcoef(z[:2])[0, 1].item()) < 0.02  # models' streams are uncorrelated
    idx = rng.randint(10, seeds, 0, (50000,), rng.BATCH)
    counts = torch.bincount(idx.flatten(), minlength=10).double()
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum().item()
    assert idx.min().item() == 0 and idx.max().item() == 9 and chi2 < 30  # 9 dof: p < 1e-3 above 27.9
    assert math.isfinite(z.abs().max().item())
