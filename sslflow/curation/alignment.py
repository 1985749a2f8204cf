"""Aligning the thumbnails of two larger images, to tell a copy from another view of one scene.

Two crops of one photo that overlap by a third correlate as well as a copy does when their
shared part is smooth sky, and a copy that was shifted by a fraction of a thumbnail pixel or
cropped to 90 % of its area correlates worse than that at any whole-pixel shift. So the
verification of :mod:`sslflow.curation.dedup` fits the geometry first: a per-axis scale and a
translation taking one thumbnail onto the other (Gauss-Newton on the blurred thumbnails, coarse
to fine, with a gain and offset of brightness left free), then asks two things of the fit:

* **coverage**: the share of each image the other one covers under it. A copy (a re-encode, a
  rescale, a few pixels of shift, a crop keeping 90 % of the area) covers ≥ 0.9 of its original;
  two crops of one photo that overlap by half cover ≤ 0.67.
* **detail correlation**: the Pearson correlation of the aligned thumbnails' high-pass parts
  (each minus its Gaussian blur). The shared smooth gradient that makes distinct crops correlate
  is removed; edges and texture must agree.
* for a thumbnail with no detail (flat sky, a blurred background: its high-pass part varies by
  less than a grey level, so a JPEG re-encode decorrelates it), the aligned thumbnails
  themselves: their correlation and their mean absolute difference.

Measured on planted copies (docs/benchmarks/curation.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

SIGMAS = (1.5, 0.75)
"""Blur (thumbnail pixels, at 32 px) of the coarse-to-fine fit: the coarse level brings shifts
of a few pixels into reach, the fine one makes the fit sub-pixel."""
STEPS = 4
"""Gauss-Newton steps per level (the measured fit did not improve with more)."""
MAX_STEP = 0.1
"""Largest change of a parameter in one step (normalised coordinates: 0.1 is 5 % of a side)."""
DETAIL_SIGMA = 0.75
"""Blur removed from a thumbnail (at 32 px) to keep its detail."""


@dataclass(frozen=True)
class Fit:
    """Per pair: the alignment of ``b`` onto ``a`` and what it says.

    Attributes:
        params: (n, 4) scale x, scale y, shift x, shift y in normalised coordinates
            (``a``'s point p shows ``b``'s point scale · p + shift).
        coverage: (n,) the smaller of the share of ``a`` that ``b`` covers and the share of ``b``
            that ``a`` covers.
        detail: (n,) Pearson correlation of the aligned high-pass thumbnails.
        detail_level: (n,) the smaller standard deviation of the two high-pass thumbnails
            (grey levels): how much detail there is to correlate.
        correlation: (n,) Pearson correlation of the aligned thumbnails.
        difference: (n,) their mean absolute difference (grey levels).
    """

    params: np.ndarray
    coverage: np.ndarray
    detail: np.ndarray
    detail_level: np.ndarray
    correlation: np.ndarray
    difference: np.ndarray


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, S, S) float → the same, blurred separably (edges replicated)."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = F.pad(images[:, None], (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[:, 0]


def warp(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """(n, C, S, S) sampled at scale · p + shift for each point p of the frame (bilinear,
    edges replicated)."""
    n, _, height, width = images.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = params[:, 0], params[:, 1]
    theta[:, 0, 2], theta[:, 1, 2] = params[:, 2], params[:, 3]
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of (n, H, W) images (0 when either is flat)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-6)


def _gradients(images: torch.Tensor) -> torch.Tensor:
    """(n, S, S) → (n, 3, S, S): the images and their x and y derivatives per normalised unit."""
    side = images.shape[-1]
    dx, dy = torch.zeros_like(images), torch.zeros_like(images)
    dx[:, :, 1:-1] = (images[:, :, 2:] - images[:, :, :-2]) * (side / 4)
    dy[:, 1:-1, :] = (images[:, 2:, :] - images[:, :-2, :]) * (side / 4)
    return torch.stack([images, dx, dy], 1)


def fit_alignment(a: np.ndarray, b: np.ndarray) -> Fit:
    """Align each thumbnail of ``b`` (n, S, S) onto its partner in ``a`` (see the module
    docstring). A border of S/10 px is left out of every comparison: a shifted copy's
    uncovered strip and the edge where sampling replicates pixels would dominate it."""
    ta = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    tb = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    n, side, _ = ta.shape
    scale = side / 32
    inner = slice(max(1, side // 10), side - max(1, side // 10))
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    grid_y, grid_x = (c[inner, inner] for c in torch.meshgrid(coords, coords, indexing="ij"))
    params = torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(n, 1)
    for sigma in SIGMAS:
        target = gaussian_blur(ta, sigma * scale)[:, inner, inner].flatten(1)
        target = target - target.mean(1, keepdim=True)
        moving = _gradients(gaussian_blur(tb, sigma * scale))
        for _ in range(STEPS):
            warped = warp(moving, params)[:, :, inner, inner].flatten(2)
            values, dx, dy = warped[:, 0], warped[:, 1], warped[:, 2]
            values = values - values.mean(1, keepdim=True)
            gain = (target * values).sum(1) / target.square().sum(1).clamp(min=1e-6)
            residual = values - gain[:, None] * target
            jacobian = torch.stack([dx * grid_x.flatten(), dy * grid_y.flatten(), dx, dy], 2)
            jacobian = jacobian - jacobian.mean(1, keepdim=True)  # the offset is free
            hessian = jacobian.transpose(1, 2) @ jacobian + 1e-3 * torch.eye(4)
            step = torch.linalg.solve(hessian, -(jacobian.transpose(1, 2) @ residual[..., None]))
            params = params + step[..., 0].clamp(-MAX_STEP, MAX_STEP)
        params[:, :2] = params[:, :2].clamp(0.5, 2.0)
    first = ta[:, inner, inner]
    second = warp(tb[:, None], params)[:, 0]
    detail_a = (ta - gaussian_blur(ta, DETAIL_SIGMA * scale))[:, inner, inner]
    detail_b = (second - gaussian_blur(second, DETAIL_SIGMA * scale))[:, inner, inner]
    second = second[:, inner, inner]
    return Fit(
        params=params.numpy(),
        coverage=coverage(params.numpy()),
        detail=pearson(detail_a, detail_b).numpy(),
        detail_level=torch.minimum(detail_a.flatten(1).std(1), detail_b.flatten(1).std(1)).numpy(),
        correlation=pearson(first, second).numpy(),
        difference=(first - second).abs().flatten(1).mean(1).numpy(),
    )


def coverage(params: np.ndarray) -> np.ndarray:
    """(n, 4) alignments → (n,) min(share of ``a`` covered by ``b``, share of ``b`` covered by
    ``a``): ``b``'s frame [-1, 1]² seen from ``a`` is (q - shift) / scale, per axis."""
    scales, shifts = params[:, :2], params[:, 2:]
    low = np.maximum(-1.0, (-1.0 - shifts) / scales)
    high = np.minimum(1.0, (1.0 - shifts) / scales)
    covered_a = np.prod(np.clip(high - low, 0.0, None) / 2, axis=1)
    return np.minimum(covered_a, covered_a * np.prod(scales, axis=1))
