"""icstn.noise: the paper's corner-noise model."""

import pytest
import torch

from icstn import noise, warps


class TestPerturb:
    def test_corner_statistics_match_sigma(self):
        sigma_px, size, n = 3.5, 28, 20000
        g = torch.Generator().manual_seed(0)
        p = noise.perturb(n, sigma_px, size, "homography", g).double()
        corners = torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64)
        disp = (warps.transform_points(warps.vec2mat(p, "homography"), corners) - corners) * (size - 1) / 2  # px
        # each coordinate: corner noise + shared translation, both N(0, sigma^2)
        assert disp.std(0).mean().item() == pytest.approx(sigma_px * 2**0.5, rel=0.03)
        assert disp.mean(0).abs().max().item() < 0.1
        # the shared translation correlates corners: cov(a, b) = sigma^2, i.e. correlation 1/2
        corr = torch.corrcoef(torch.stack([disp[:, 0, 0], disp[:, 1, 0]]))[0, 1].item()
        assert corr == pytest.approx(0.5, abs=0.03)

    def test_homography_hits_the_noisy_corners(self):
        g = torch.Generator().manual_seed(1)
        z = noise.unit_noise(8, g).double() * 0.2
        p = noise.corners_to_params(z, "homography")
        corners = torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64)
        assert torch.allclose(warps.transform_points(warps.vec2mat(p, "homography"), corners), corners + z, atol=1e-10)

    def test_seeded(self):
        a = noise.perturb(5, 2.0, 28, "affine", torch.Generator().manual_seed(7))
        b = noise.perturb(5, 2.0, 28, "affine", torch.Generator().manual_seed(7))
        assert torch.equal(a, b)

    def test_zero_sigma_is_identity(self):
        p = noise.perturb(4, 0.0, 28, "homography", torch.Generator().manual_seed(0))
        assert torch.allclose(p, torch.zeros_like(p), atol=1e-6)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="sigma must be >= 0 pixels, got -1.0"):
            noise.perturb(4, -1.0, 28, "affine", torch.Generator())
        with pytest.raises(ValueError, match="unknown warp type"):
            noise.perturb(4, 1.0, 28, "perspective", torch.Generator())
