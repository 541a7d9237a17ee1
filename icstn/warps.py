"""Warp families, parameters <-> 3x3 matrices, composition, fitting and image sampling.

Convention (whole module):
    * Coordinates are *canonical*: x and y run over [-1, 1] across an image, pixel centres at
      the ends included (``align_corners=True``), so a side of S pixels spans (S - 1) / 2 pixels
      per canonical unit.
    * A warp matrix maps *output* (destination) coordinates to *input* (source) sampling
      coordinates: ``src_from_dst``. Warping an image by p samples ``image(M(p) @ x)`` for every
      output pixel x; pixels that fall outside the source read 0.
    * Parameters p are offsets from the identity (p = 0 is the identity warp), as in the paper:
      affine M(p) = [[1+p1, p2, p3], [p4, 1+p5, p6], [0, 0, 1]]; the homography adds p7, p8 in
      the last row and keeps M[2, 2] = 1.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

WARP_DOF = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8}

#: Box corners in canonical coordinates, clockwise from top-left. (4, 2)
CANONICAL_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))


@functools.cache
def canonical_corners(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """CANONICAL_CORNERS as a (4, 2) tensor, made once per dtype and device (the noise model
    needs it every training step; a fresh host-to-device copy each time would stall a GPU)."""
    return torch.tensor(CANONICAL_CORNERS, dtype=dtype, device=device)


def check_warp(warp: str) -> int:
    """Return the number of parameters of warp family ``warp``; ValueError if unknown."""
    if warp not in WARP_DOF:
        raise ValueError(f"unknown warp type {warp!r}; allowed: {sorted(WARP_DOF)}")
    return WARP_DOF[warp]


def _check_params(p: torch.Tensor, warp: str) -> None:
    dof = check_warp(warp)
    if p.ndim != 2 or p.shape[1] != dof:
        raise ValueError(f"{warp} parameters must have shape (B, {dof}), got {tuple(p.shape)}")


def _check_matrix(m: torch.Tensor, name: str = "matrix") -> None:
    if m.ndim != 3 or m.shape[1:] != (3, 3):
        raise ValueError(f"{name} must have shape (B, 3, 3), got {tuple(m.shape)}")


def vec2mat(p: torch.Tensor, warp: str) -> torch.Tensor:
    """Warp parameters to their 3x3 matrix.

    Args:
        p: (B, D) parameters of family ``warp`` (D = 2, 4, 6 or 8).
    Returns:
        (B, 3, 3) ``src_from_dst`` matrix; the identity for p = 0.

    >>> vec2mat(torch.zeros(1, 6), "affine")[0]
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]])
    """
    _check_params(p, warp)
    zero = torch.zeros_like(p[:, 0])
    one = torch.ones_like(zero)
    if warp == "translation":
        tx, ty = p.unbind(1)
        rows = [one, zero, tx, zero, one, ty, zero, zero, one]
    elif warp == "similarity":
        pc, ps, tx, ty = p.unbind(1)
        rows = [1 + pc, -ps, tx, ps, 1 + pc, ty, zero, zero, one]
    elif warp == "affine":
        p1, p2, p3, p4, p5, p6 = p.unbind(1)
        rows = [1 + p1, p2, p3, p4, 1 + p5, p6, zero, zero, one]
    else:
        p1, p2, p3, p4, p5, p6, p7, p8 = p.unbind(1)
        rows = [1 + p1, p2, p3, p4, 1 + p5, p6, p7, p8, one]
    return torch.stack(rows, 1).view(-1, 3, 3)


def mat2vec(m: torch.Tensor, warp: str) -> torch.Tensor:
    """3x3 matrix to warp parameters, after normalising so that M[2, 2] = 1.

    Args:
        m: (B, 3, 3) matrix of a warp of family ``warp``.
    Returns:
        (B, D) parameters. Entries the family does not have are ignored.
    """
    check_warp(warp)
    _check_matrix(m)
    m = m / m[:, 2:3, 2:3]
    if warp == "translation":
        return m[:, :2, 2]
    if warp == "similarity":
        return torch.stack([m[:, 0, 0] - 1, m[:, 1, 0], m[:, 0, 2], m[:, 1, 2]], 1)
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    flat = (m - eye).reshape(-1, 9)  # (B, 9)
    return flat[:, :6] if warp == "affine" else flat[:, :8]


def compose(dp: torch.Tensor, p: torch.Tensor, warp: str) -> torch.Tensor:
    """Compose an update onto a warp: M(p_out) = M(dp) @ M(p), normalised to M[2, 2] = 1.

    Args:
        dp, p: (B, D) parameters of family ``warp``.
    Returns:
        (B, D) parameters of the composed warp.
    """
    return mat2vec(vec2mat(dp, warp) @ vec2mat(p, warp), warp)


def inverse(p: torch.Tensor, warp: str) -> torch.Tensor:
    """Parameters of the inverse warp, M(p_inv) = M(p)^-1.

    Args:
        p: (B, D) parameters of family ``warp``.
    Returns:
        (B, D); ``compose(inverse(p), p)`` is the identity (0).
    """
    return mat2vec(torch.linalg.inv(vec2mat(p, warp)), warp)


def _design(src: torch.Tensor, dst: torch.Tensor, warp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear system A p = b whose solution maps ``src`` onto ``dst``. (B, 2n, D), (B, 2n)."""
    x, y = src.unbind(-1)  # (B, n)
    u, v = dst.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    if warp == "translation":
        rows_u, rows_v = [one, zero], [zero, one]
    elif warp == "similarity":
        rows_u, rows_v = [x, -y, one, zero], [y, x, zero, one]
    elif warp == "affine":
        rows_u = [x, y, one, zero, zero, zero]
        rows_v = [zero, zero, zero, x, y, one]
    else:  # u (p7 x + p8 y + 1) = (1+p1) x + p2 y + p3, likewise v
        rows_u = [x, y, one, zero, zero, zero, -x * u, -y * u]
        rows_v = [zero, zero, zero, x, y, one, -x * v, -y * v]
    a = torch.cat([torch.stack(rows_u, -1), torch.stack(rows_v, -1)], 1)  # (B, 2n, D)
    b = torch.cat([u - x, v - y], 1)  # (B, 2n): residual from the identity
    return a, b


def fit(src: torch.Tensor, dst: torch.Tensor, warp: str) -> torch.Tensor:
    """Warp parameters that map points ``src`` onto ``dst``.

    Exact for a homography from 4 points (the 8x8 solve); least squares otherwise.

    Args:
        src: (n, 2) or (B, n, 2) points in canonical coordinates, n >= D / 2.
        dst: (B, n, 2) their images.
    Returns:
        (B, D) parameters p with M(p) @ src ~= dst.
    """
    dof = check_warp(warp)
    if dst.ndim != 3 or dst.shape[-1] != 2:
        raise ValueError(f"dst must have shape (B, n, 2), got {tuple(dst.shape)}")
    src = src.expand_as(dst)
    if 2 * dst.shape[1] < dof:
        raise ValueError(f"{warp} needs at least {dof // 2} points, got {dst.shape[1]}")
    a, b = _design(src, dst, warp)
    if a.shape[1] == dof:
        return torch.linalg.solve(a, b)
    return (torch.linalg.pinv(a) @ b.unsqueeze(-1)).squeeze(-1)


def fit_corners(dst: torch.Tensor, warp: str) -> torch.Tensor:
    """``fit(canonical corners, dst, warp)`` without a solver, for the training hot path.

    A homography has a closed form (Heckbert's square-to-quad); the other families are linear
    in dst, through a pseudo-inverse made once. No factorisation runs per call: no host sync,
    so a CUDA graph can capture it, and it is exact and differentiable.

    Args:
        dst: (B, 4, 2) images of CANONICAL_CORNERS.
    Returns:
        (B, D) parameters, as ``fit`` gives them.
    """
    check_warp(warp)
    if dst.ndim != 3 or dst.shape[1:] != (4, 2):
        raise ValueError(f"dst must have shape (B, 4, 2), got {tuple(dst.shape)}")
    if warp != "homography":
        disp = dst - canonical_corners(dst.dtype, dst.device)
        return torch.cat([disp[..., 0], disp[..., 1]], 1) @ _corner_pinv(warp, dst.dtype, dst.device).T
    # the unit square (0,0), (1,0), (1,1), (0,1) onto the quad (x_i, y_i)
    (x0, x1, x2, x3), (y0, y1, y2, y3) = dst[..., 0].unbind(1), dst[..., 1].unbind(1)
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    den = dx1 * dy2 - dx2 * dy1
    g, h = (dx3 * dy2 - dx2 * dy3) / den, (dx1 * dy3 - dx3 * dy1) / den
    a, b, d, e = x1 - x0 + g * x1, x3 - x0 + h * x3, y1 - y0 + g * y1, y3 - y0 + h * y3
    # then the canonical square onto the unit square, u = (x + 1) / 2, v = (y + 1) / 2
    rows = [a / 2, b / 2, (a + b) / 2 + x0, d / 2, e / 2, (d + e) / 2 + y0, g / 2, h / 2, (g + h) / 2 + 1]
    return mat2vec(torch.stack(rows, 1).view(-1, 3, 3), warp)


@functools.cache
def _corner_pinv(warp: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(D, 8) least-squares solver of a linear family on the canonical corners, in float64 on CPU once."""
    corners = canonical_corners(torch.float64).unsqueeze(0)
    a, _ = _design(corners, corners, warp)
    return torch.linalg.pinv(a[0]).to(dtype=dtype, device=device)


def transform_points(src_from_dst: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply (B, 3, 3) matrices to (B, n, 2) or (n, 2) points; returns (B, n, 2)."""
    _check_matrix(src_from_dst, "src_from_dst")
    pts = pts.expand(src_from_dst.shape[0], *pts.shape[-2:])
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)  # (B, n, 3)
    out = homog @ src_from_dst.transpose(1, 2)
    return out[..., :2] / out[..., 2:]


#: How ``sampling_grid`` computes a grid, per device type: "matmul" (``_MatmulGrid``: the matrices
#: times a constant basis of the output pixels, one (B, 6) @ (6, H*W*2) product, and its backward one
#: (B, H*W*2) @ (H*W*2, 6) product) or "affine_grid" (``F.affine_grid``: a batched matmul of inner
#: dimension 3 over the base grid copied B times, then the projective divide by autograd). CPU:
#: "matmul"; the grid of a planar IC-STN step (1,200 warps of 50x50) took 12 ms forward and 10 ms
#: backward against 430 ms for affine_grid's, 1 thread (``python -m benchmarks.throughput --device
#: cpu`` has the whole step). CUDA: "affine_grid", measured fast there, until a GPU run compares them.
GRID = {"cpu": "matmul", "cuda": "affine_grid"}  # any other device type: matmul
GRIDS = ("matmul", "affine_grid")


@functools.cache
def _grid_basis(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The output pixels' canonical (x, y, 1), laid out as a grid holds its (x, y) pairs; made once per
    size, dtype and device.

    Returns:
        rows: (6, H*W*2); ``m[:, :2].reshape(B, 6) @ rows`` applies the first two rows of m to every
            pixel: row 3i + j holds coordinate j of the pixels in columns 2q + i, zeros elsewhere.
        pairs: (H*W*2, 3), each pixel's (x, y, 1) twice; ``m[:, 2] @ pairs.T`` is every pixel's
            projective denominator, once for x and once for y.
    """
    xs, ys = torch.linspace(-1, 1, w, dtype=torch.float64), torch.linspace(-1, 1, h, dtype=torch.float64)
    pts = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=torch.float64)], -1).view(-1, 3)
    rows = torch.zeros(2, 3, h * w, 2, dtype=torch.float64)
    for i in range(2):
        rows[i, :, :, i] = pts.T
    pairs = pts.repeat_interleave(2, 0)
    return rows.view(6, -1).to(dtype=dtype, device=device), pairs.to(dtype=dtype, device=device)


class _MatmulGrid(torch.autograd.Function):
    """(B, 3, 3) matrices -> (B, H, W, 2) grid as products with ``_grid_basis``; backward to the 9 entries.

    Summation order: each coordinate is m_i0 x + m_i1 y + m_i2, summed by a GEMM with three exact
    zero terms (the other row's entries), so a non-finite entry of one row makes both coordinates NaN
    (a diverged model's loss is NaN anyway). The projective divide is a multiply by the reciprocal
    (1 ulp from a true divide). The backward sums each entry's gradient over the pixels in a GEMM,
    as affine_grid's batched matmul does, in its own order. Every element-wise product is between
    tensors of one shape (B, H*W*2): a broadcast over the last axis of 2 runs several times slower.
    """

    @staticmethod
    def forward(ctx, src_from_dst: torch.Tensor, h: int, w: int, projective: bool) -> torch.Tensor:
        b = src_from_dst.shape[0]
        rows, pairs = _grid_basis(h, w, src_from_dst.dtype, src_from_dst.device)
        grid = src_from_dst[:, :2].reshape(b, 6) @ rows  # (B, H*W*2): numerators
        inv = None
        if projective:
            inv = (src_from_dst[:, 2] @ pairs.T).reciprocal_()  # (B, H*W*2): 1 / denominator
            grid.mul_(inv)
        ctx.save_for_backward(grid, inv)
        ctx.shape = (b, h, w)
        return grid.view(b, h, w, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grid, inv = ctx.saved_tensors
        b, h, w = ctx.shape
        rows, pairs = _grid_basis(h, w, grad.dtype, grad.device)
        g_num = grad.reshape(b, -1)  # (B, H*W*2)
        out = grad.new_empty(b, 3, 3)
        if inv is None:
            out[:, 2] = 0
        else:  # grid = num / den: d num = g / den, d den = -(g . grid) / den, summed over x and y by the GEMM
            g_num = g_num * inv
            out[:, 2] = -(g_num * grid) @ pairs  # (B, H*W*2) @ (H*W*2, 3)
        out[:, :2] = (g_num @ rows.T).view(b, 2, 3)
        return out, None, None, None


def sampling_grid(src_from_dst: torch.Tensor, size: tuple[int, int], projective: bool = True) -> torch.Tensor:
    """Sampling grid for ``F.grid_sample`` from a batch of warp matrices.

    Convention: canonical coordinates, align_corners=True; ``src_from_dst`` maps output
    coordinates to source coordinates.

    Args:
        src_from_dst: (B, 3, 3).
        size: output (H, W).
        projective: False when every matrix's last row is (0, 0, 1), to skip the divide.
    Returns:
        (B, H, W, 2) source coordinates (x, y) of every output pixel; computed as ``GRID`` says for
        the device type, the same up to float rounding either way.

    >>> sampling_grid(torch.eye(3).unsqueeze(0), (2, 3))[0, :, :, 0]
    tensor([[-1.,  0.,  1.],
            [-1.,  0.,  1.]])
    """
    _check_matrix(src_from_dst, "src_from_dst")
    h, w = size
    how = GRID.get(src_from_dst.device.type, "matmul")
    if how == "matmul":
        return _MatmulGrid.apply(src_from_dst, h, w, projective)
    if how != "affine_grid":
        raise ValueError(f"icstn.warps.GRID[{src_from_dst.device.type!r}] is {how!r}; allowed: {list(GRIDS)}")
    # the affine rows through affine_grid, then the projective divide
    num = F.affine_grid(src_from_dst[:, :2], [src_from_dst.shape[0], 1, h, w], align_corners=True)  # (B, H, W, 2)
    if not projective:
        return num
    last = src_from_dst[:, 2]  # (B, 3)
    kw = dict(dtype=src_from_dst.dtype, device=src_from_dst.device)
    xs, ys = torch.linspace(-1, 1, w, **kw), torch.linspace(-1, 1, h, **kw)
    den = last[:, 0, None, None] * xs + last[:, 1, None, None] * ys[:, None] + last[:, 2, None, None]  # (B, H, W)
    return num / den.unsqueeze(-1)


def warp_image(
    image: torch.Tensor,
    p: torch.Tensor,
    warp: str,
    size: tuple[int, int],
    ref: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``image`` under warp p, optionally through a fixed reference matrix.

    Convention: the output pixel x reads the source at ``ref @ M(p) @ x`` (canonical
    coordinates, align_corners=True, bilinear, zeros outside the source). ``ref`` maps the
    canonical square of the output frame onto a box of the source, e.g. the central 36x36 crop
    of a 50x50 GTSRB image.

    Args:
        image: (B, C, Hs, Ws), or (1, C, Hs, Ws) shared by the whole batch.
        p: (B, D) parameters of family ``warp``.
        size: output (H, W).
        ref: optional (3, 3) ``src_from_box`` matrix.
    Returns:
        (B, C, H, W).

    >>> img = torch.arange(16.0).view(1, 1, 4, 4)
    >>> torch.equal(warp_image(img, torch.zeros(1, 2), "translation", (4, 4)), img)
    True
    """
    if image.ndim != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    src_from_dst = vec2mat(p, warp)
    if ref is not None:
        src_from_dst = ref.to(src_from_dst) @ src_from_dst
    if image.shape[0] not in (1, p.shape[0]):
        raise ValueError(f"image batch {image.shape[0]} does not match parameter batch {p.shape[0]}")
    grid = sampling_grid(src_from_dst, size, projective=warp == "homography").to(image.dtype)  # (B, H, W, 2)
    if image.shape[0] == 1 and p.shape[0] != 1:
        # one source for the whole batch: sample it through one tall grid. An expanded batch would
        # be copied B times over (cuDNN's sampler makes its input contiguous): GBs for the planar image.
        b, (h, w) = p.shape[0], size
        out = F.grid_sample(image, grid.reshape(1, b * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.view(image.shape[1], b, h, w).transpose(0, 1)  # (1, C, B*H, W) -> (B, C, H, W)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def box_matrix(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int]) -> torch.Tensor:
    """(3, 3) ``src_from_box`` matrix mapping the canonical square onto a pixel box of an image.

    Args:
        x0, y0, x1, y1: the box's corner pixel centres (inclusive) in the source image.
        size: source (H, W).
    """
    h, w = size
    sx, sy = 2 / (w - 1), 2 / (h - 1)  # canonical units per source pixel
    cx, cy = (x0 + x1) / 2 * sx - 1, (y0 + y1) / 2 * sy - 1
    hx, hy = (x1 - x0) / 2 * sx, (y1 - y0) / 2 * sy
    return torch.tensor([[hx, 0.0, cx], [0.0, hy, cy], [0.0, 0.0, 1.0]])
