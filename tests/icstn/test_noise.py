"""icstn.noise: the paper's corner-noise model."""

import pytest
import torch

from icstn import noise, rng, warps


class TestPerturb:
    def test_corner_statistics_match_sigma(self):
        sigma_px, size, n = 3.5, 28, 20000
        p = noise.perturb(n, sigma_px, size, "homography", seed=0).double()
        corners = torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64)
        disp = (warps.transform_points(warps.vec2mat(p, "homography"), corners) - corners) * (size - 1) / 2  # px
        # each coordinate: corner noise + shared translation, both N(0, sigma^2)
        assert disp.std(0).mean().item() == pytest.approx(sigma_px * 2**0.5, rel=0.03)
        assert disp.mean(0).abs().max().item() < 0.1
        # the shared translation correlates corners: cov(a, b) = sigma^2, i.e. correlation 1/2
        corr = torch.corrcoef(torch.stack([disp[:, 0, 0], disp[:, 1, 0]]))[0, 1].item()
        assert corr == pytest.approx(0.5, abs=0.03)

    def test_homography_hits_the_noisy_corners(self):
        z = noise.unit_noise(torch.tensor([1]), 0, 8, rng.NOISE)[0].double() * 0.2
        p = noise.corners_to_params(z, "homography")
        corners = torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64)
        assert torch.allclose(warps.transform_points(warps.vec2mat(p, "homography"), corners), corners + z, atol=1e-10)

    def test_seeded(self):
        a = noise.perturb(5, 2.0, 28, "affine", seed=7)
        assert torch.equal(a, noise.perturb(5, 2.0, 28, "affine", seed=7))
        assert not torch.equal(a, noise.perturb(5, 2.0, 28, "affine", seed=8))

    def test_zero_sigma_is_identity(self):
        p = noise.perturb(4, 0.0, 28, "homography", seed=0)
        assert torch.allclose(p, torch.zeros_like(p), atol=1e-6)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="sigma must be >= 0 pixels, got -1.0"):
            noise.perturb(4, -1.0, 28, "affine", seed=0)
        with pytest.raises(ValueError, match="unknown warp type"):
            noise.perturb(4, 1.0, 28, "perspective", seed=0)


class TestFitCorners:
    """The solver-free fit of the hot path equals the general ``warps.fit``."""

    @pytest.mark.parametrize("warp", sorted(warps.WARP_DOF))
    def test_equals_fit(self, warp):
        z = noise.unit_noise(torch.tensor([3]), 0, 64, rng.NOISE)[0].double() * 0.15  # (64, 4, 2)
        corners = warps.canonical_corners(torch.float64)
        expected = warps.fit(corners, corners + z, warp)
        assert torch.allclose(warps.fit_corners(corners + z, warp), expected, atol=1e-10)

    def test_homography_gradcheck(self):
        dst = (warps.canonical_corners(torch.float64) + 0.1 * torch.randn(3, 4, 2, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(lambda d: warps.fit_corners(d, "homography"), (dst,))

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"dst must have shape \(B, 4, 2\)"):
            warps.fit_corners(torch.zeros(2, 3, 2), "affine")
