"""icstn.warps: one class per public function; round trips, references, gradcheck in float64."""

import pytest
import torch
import torch.nn.functional as F

from icstn import warps

FAMILIES = list(warps.WARP_DOF)


def rand_params(warp, b=3, scale=0.1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(b, warps.WARP_DOF[warp], generator=g, dtype=dtype) * scale
    if warp == "homography":
        p[:, 6:] *= 0.3  # keep the projective part mild
    return p


def smooth_image(b=1, c=1, h=40, w=40, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=dtype), torch.linspace(-1, 1, w, dtype=dtype), indexing="ij")
    img = torch.sin(3 * xs) * torch.cos(2 * ys) + 0.5 * xs
    return img.expand(b, c, h, w).clone()


class TestVec2Mat:
    @pytest.mark.parametrize("warp", FAMILIES)
    def test_identity(self, warp):
        m = warps.vec2mat(torch.zeros(2, warps.WARP_DOF[warp]), warp)
        assert torch.equal(m, torch.eye(3).expand(2, 3, 3))

    def test_affine_layout(self):
        p = torch.arange(1.0, 7.0).view(1, 6)
        expected = torch.tensor([[[2.0, 2, 3], [4, 6, 6], [0, 0, 1]]])
        assert torch.equal(warps.vec2mat(p, "affine"), expected)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="unknown warp type 'shear'.*allowed"):
            warps.vec2mat(torch.zeros(1, 6), "shear")
        with pytest.raises(ValueError, match=r"shape \(B, 8\)"):
            warps.vec2mat(torch.zeros(1, 6), "homography")

    @pytest.mark.parametrize("warp", FAMILIES)
    def test_gradcheck(self, warp):
        p = rand_params(warp).requires_grad_()
        assert torch.autograd.gradcheck(lambda q: warps.vec2mat(q, warp), (p,))


class TestMat2Vec:
    @pytest.mark.parametrize("warp", FAMILIES)
    def test_round_trip(self, warp):
        p = rand_params(warp)
        assert torch.allclose(warps.mat2vec(warps.vec2mat(p, warp), warp), p)

    def test_normalises_scale(self):
        p = rand_params("homography")
        assert torch.allclose(warps.mat2vec(3.0 * warps.vec2mat(p, "homography"), "homography"), p)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"\(B, 3, 3\)"):
            warps.mat2vec(torch.zeros(2, 2, 3), "affine")

    def test_gradcheck(self):
        m = warps.vec2mat(rand_params("homography"), "homography").requires_grad_()
        assert torch.autograd.gradcheck(lambda x: warps.mat2vec(x, "homography"), (m,))


class TestCompose:
    @pytest.mark.parametrize("warp", FAMILIES)
    def test_matches_matrix_product(self, warp):
        dp, p = rand_params(warp, seed=1), rand_params(warp, seed=2)
        m = warps.vec2mat(dp, warp) @ warps.vec2mat(p, warp)
        assert torch.allclose(warps.vec2mat(warps.compose(dp, p, warp), warp), m / m[:, 2:, 2:])

    @pytest.mark.parametrize("warp", FAMILIES)
    def test_identity_is_neutral(self, warp):
        p = rand_params(warp)
        zero = torch.zeros_like(p)
        assert torch.allclose(warps.compose(zero, p, warp), p)
        assert torch.allclose(warps.compose(p, zero, warp), p)

    @pytest.mark.parametrize("warp", FAMILIES)
    def test_gradcheck(self, warp):
        dp, p = rand_params(warp, seed=1).requires_grad_(), rand_params(warp, seed=2).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: warps.compose(a, b, warp), (dp, p))


class TestInverse:
    @pytest.mark.parametrize("warp", FAMILIES)
    def test_compose_with_inverse_is_identity(self, warp):
        p = rand_params(warp)
        inv = warps.inverse(p, warp)
        assert torch.allclose(warps.compose(inv, p, warp), torch.zeros_like(p), atol=1e-12)
        assert torch.allclose(warps.compose(p, inv, warp), torch.zeros_like(p), atol=1e-12)

    @pytest.mark.parametrize("warp", FAMILIES)
    def test_gradcheck(self, warp):
        p = rand_params(warp).requires_grad_()
        assert torch.autograd.gradcheck(lambda q: warps.inverse(q, warp), (p,))


class TestFit:
    corners = torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64)

    def test_homography_maps_its_four_corners(self):
        g = torch.Generator().manual_seed(0)
        dst = self.corners + 0.2 * torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
        p = warps.fit(self.corners, dst, "homography")
        mapped = warps.transform_points(warps.vec2mat(p, "homography"), self.corners)
        assert torch.allclose(mapped, dst, atol=1e-10)

    @pytest.mark.parametrize("warp", FAMILIES)
    def test_recovers_a_warp_of_its_family(self, warp):
        p = rand_params(warp)
        dst = warps.transform_points(warps.vec2mat(p, warp), self.corners)
        assert torch.allclose(warps.fit(self.corners, dst, warp), p, atol=1e-10)

    def test_affine_is_least_squares(self):
        dst = self.corners + torch.tensor([[0.1, 0], [0, 0], [0, 0], [0, 0]], dtype=torch.float64)
        p = warps.fit(self.corners, dst.unsqueeze(0), "affine")
        a, b = warps._design(self.corners.unsqueeze(0), dst.unsqueeze(0), "affine")
        residual = a @ p.unsqueeze(-1) - b.unsqueeze(-1)
        assert torch.allclose(a.transpose(1, 2) @ residual, torch.zeros(1, 6, 1, dtype=torch.float64), atol=1e-12)

    def test_too_few_points(self):
        with pytest.raises(ValueError, match="at least 4 points"):
            warps.fit(self.corners[:3], self.corners[:3].unsqueeze(0), "homography")

    @pytest.mark.parametrize("warp", ["affine", "homography"])
    def test_gradcheck(self, warp):
        dst = (self.corners + 0.1 * torch.randn(2, 4, 2, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(lambda d: warps.fit(self.corners, d, warp), (dst,))


class TestSamplingGrid:
    """The matmul grid (``GRID`` "matmul") against F.affine_grid and the projective divide, the old path."""

    @staticmethod
    def matrices(warp, b=3, seed=0):
        return warps.vec2mat(rand_params(warp, b=b, scale=0.2, seed=seed), warp)

    @staticmethod
    def reference(m, size):
        """(B, H, W, 2) by F.affine_grid and a projective divide, written out independently."""
        h, w = size
        num = F.affine_grid(m[:, :2], [m.shape[0], 1, h, w], align_corners=True)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=m.dtype), torch.linspace(-1, 1, w, dtype=m.dtype), indexing="ij")
        den = m[:, 2, 0, None, None] * xs + m[:, 2, 1, None, None] * ys + m[:, 2, 2, None, None]
        return num / den.unsqueeze(-1)

    @pytest.mark.parametrize("warp", ["affine", "homography"])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_matches_the_reference(self, warp, dtype):
        m = self.matrices(warp, b=4).to(dtype)
        grid = warps.sampling_grid(m, (7, 9), projective=warp == "homography")
        assert grid.shape == (4, 7, 9, 2) and grid.dtype == dtype
        assert torch.allclose(grid, self.reference(m, (7, 9)), atol=1e-6 if dtype == torch.float32 else 1e-13)

    @pytest.mark.parametrize("warp", ["affine", "homography"])
    def test_gradient_matches_the_reference(self, warp):
        m = self.matrices(warp, b=4).requires_grad_()
        weight = torch.randn(4, 6, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        (g_new,) = torch.autograd.grad((warps.sampling_grid(m, (6, 5), warp == "homography") * weight).sum(), m)
        (g_ref,) = torch.autograd.grad((self.reference(m, (6, 5)) * weight).sum(), m)
        if warp == "affine":  # the reference differentiates its last row through the divide by 1
            g_ref[:, 2] = 0
        assert torch.allclose(g_new, g_ref, atol=1e-12)

    def test_pixel_centres_at_the_ends(self):
        grid = warps.sampling_grid(torch.eye(3).unsqueeze(0), (3, 5), projective=False)
        assert grid[0, 0, 0].tolist() == [-1.0, -1.0] and grid[0, -1, -1].tolist() == [1.0, 1.0]
        assert grid[0, 1, 2].tolist() == [0.0, 0.0]

    @pytest.mark.parametrize("projective", [False, True])
    def test_gradcheck(self, projective):
        m = self.matrices("homography" if projective else "affine", b=2).requires_grad_()
        assert torch.autograd.gradcheck(lambda x: warps.sampling_grid(x, (3, 4), projective), (m,))

    def test_affine_grid_selectable(self, monkeypatch):
        m = self.matrices("homography")
        monkeypatch.setitem(warps.GRID, "cpu", "affine_grid")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            old = warps.sampling_grid(m, (5, 6))
        assert "aten::affine_grid_generator" in {e.key for e in prof.key_averages()}
        monkeypatch.setitem(warps.GRID, "cpu", "matmul")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            new = warps.sampling_grid(m, (5, 6))
        assert "aten::affine_grid_generator" not in {e.key for e in prof.key_averages()}
        assert torch.allclose(old, new, atol=1e-13)

    def test_bad_choice(self, monkeypatch):
        monkeypatch.setitem(warps.GRID, "cpu", "bmm")
        with pytest.raises(ValueError, match=r"icstn.warps.GRID\['cpu'\] is 'bmm'; allowed"):
            warps.sampling_grid(torch.eye(3).unsqueeze(0), (2, 2))

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"src_from_dst must have shape \(B, 3, 3\)"):
            warps.sampling_grid(torch.zeros(2, 2, 3), (4, 4))


class TestWarpImage:
    @pytest.mark.parametrize("warp", FAMILIES)
    def test_identity_returns_the_input(self, warp):
        img = torch.rand(2, 3, 9, 11, dtype=torch.float64)
        out = warps.warp_image(img, torch.zeros(2, warps.WARP_DOF[warp], dtype=torch.float64), warp, (9, 11))
        assert torch.allclose(out, img, atol=1e-12)

    def test_composed_warp_equals_two_warps(self):
        img = smooth_image(h=200, w=200)
        pa, pb = rand_params("homography", 1, 0.05, seed=3), rand_params("homography", 1, 0.05, seed=4)
        twice = warps.warp_image(warps.warp_image(img, pa, "homography", (200, 200)), pb, "homography", (200, 200))
        once = warps.warp_image(img, warps.compose(pa, pb, "homography"), "homography", (200, 200))
        inner = (slice(None), slice(None), slice(40, 160), slice(40, 160))  # away from the zero border
        assert (twice - once)[inner].abs().max() < 5e-3

    def test_translation_moves_content(self):
        img = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
        img[0, 0, 2, 3] = 1.0
        # sampling at x + 0.5 canonical (one pixel here) brings the pixel at column 3 to column 2
        out = warps.warp_image(img, torch.tensor([[0.5, 0.0]], dtype=torch.float64), "translation", (5, 5))
        assert out[0, 0, 2, 2] == pytest.approx(1.0)
        assert out[0, 0, :, 4].abs().sum() == 0  # outside the source reads zero

    def test_reference_box_crops(self):
        img = torch.arange(50.0 * 50).view(1, 1, 50, 50).double()
        ref = warps.box_matrix(7, 7, 43, 43, (50, 50)).double()
        out = warps.warp_image(img, torch.zeros(1, 8, dtype=torch.float64), "homography", (37, 37), ref)
        assert torch.allclose(out, img[:, :, 7:44, 7:44])

    @pytest.mark.parametrize("channels", [1, 3])
    def test_shared_source_equals_a_copied_batch(self, channels):
        img = smooth_image(c=channels).requires_grad_()
        p = rand_params("homography", b=4).requires_grad_()
        shared = warps.warp_image(img, p, "homography", (10, 12))
        copied = warps.warp_image(img.expand(4, -1, -1, -1).contiguous(), p, "homography", (10, 12))
        assert shared.shape == (4, channels, 10, 12) and torch.allclose(shared, copied, atol=1e-12)
        (g_shared,) = torch.autograd.grad(shared.square().sum(), p)
        (g_copied,) = torch.autograd.grad(copied.square().sum(), p)
        assert torch.allclose(g_shared, g_copied, atol=1e-10)

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            warps.warp_image(torch.zeros(5, 5), torch.zeros(1, 6), "affine", (5, 5))
        with pytest.raises(ValueError, match="does not match"):
            warps.warp_image(torch.zeros(2, 1, 5, 5), torch.zeros(3, 6), "affine", (5, 5))

    def test_gradcheck(self):
        img = smooth_image(b=2, h=6, w=6).requires_grad_()
        p = rand_params("homography", b=2).requires_grad_()
        assert torch.autograd.gradcheck(lambda i, q: warps.warp_image(i, q, "homography", (5, 5)), (img, p))


class TestBoxMatrix:
    def test_maps_corners_to_pixel_box(self):
        ref = warps.box_matrix(10, 20, 30, 60, (100, 200)).double()
        mapped = warps.transform_points(ref.unsqueeze(0), torch.tensor(warps.CANONICAL_CORNERS, dtype=torch.float64))
        to_px = (mapped + 1) / 2 * torch.tensor([199.0, 99.0], dtype=torch.float64)
        expected = torch.tensor([[10.0, 20], [30, 20], [30, 60], [10, 60]], dtype=torch.float64)
        assert torch.allclose(to_px, expected.unsqueeze(0))
