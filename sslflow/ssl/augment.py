"""Batched tensor augmentation: the views of a :class:`ViewSpec` from a uint8 batch.

Why batched tensor ops rather than lightly's per-sample PIL transforms: for 28 px
Fashion-MNIST on this 2-core machine (shared with other jobs), lightly's ``SimCLRTransform``
(PIL, one image at a time) makes two views of 256 images in 266 ms, the batched version below
in 22 ms — 12× faster (best of 30 interleaved rounds; ``benchmarks/bench_pretrain.py --only
augment``, docs/benchmarks/pretrain.md). Per-image
Python overhead dominates PIL on small images, while here every operation is one tensor op
over the whole batch, runs on the GPU when the batch is there, and draws its randomness from
one ``torch.Generator``: the views of a batch depend only on ``(seed, epoch, batch, rank)``, which
makes resume exact whatever the number of DataLoader workers.

Per-image randomness in one op (each image gets its own crop, flip, jitter and blur):

- random resized crop: boxes drawn as in torchvision's ``RandomResizedCrop`` (area in
  ``scale``, log-uniform aspect ratio in [3/4, 4/3]; a box that does not fit is shrunk to fit
  instead of torchvision's 10 retries) and cut + resized by ``torchvision.ops.roi_align``
  (bilinear, averaging over each output bin, so large crops are antialiased);
- horizontal flip: ``torch.where`` on a per-image coin;
- brightness/contrast jitter: per-image factors broadcast over the batch;
- Gaussian blur: separable depthwise convolution with one kernel per image.

kornia offers batched per-sample augmentation but is not a dependency; these four ops are
~100 lines on torch and torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from sslflow.ssl.methods.base import ViewSpec
from sslflow.ssl.preprocess import match_channels, normalise

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


@dataclass(frozen=True)
class AugmentConfig:
    """Photometric and geometric augmentation strengths (crop scales come from the ViewSpec).

    Attributes:
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying brightness/contrast jitter to an image.
        brightness: brightness factor drawn from [1 - b, 1 + b] (SimCLR: 0.8 × strength 0.5).
        contrast: contrast factor drawn from [1 - c, 1 + c].
        blur_p: probability of Gaussian blur on global views. SimCLR drops blur for
            CIFAR-size images (Appendix B.9): 0 by default for small images.
        blur_sigma: range of the blur's standard deviation, as a fraction of the image side
            (SimCLR: σ ∈ [0.1, 2.0] px for 224 px images with a kernel of 10% of the side).
    """

    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.0005, 0.009)

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name}={value} must be a probability in [0, 1]")
        if not 0.0 <= self.brightness < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise ValueError(f"brightness and contrast must be in [0, 1), got {self.brightness}, {self.contrast}")
        low, high = self.blur_sigma
        if not 0.0 < low <= high:
            raise ValueError(f"AugmentConfig.blur_sigma={self.blur_sigma} needs 0 < low <= high")


def crop_boxes(
    batch: int, height: int, width: int, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Random resized crop boxes, one per image: float (B, 5) rows ``(index, x1, y1, x2, y2)``.

    Coordinates are continuous pixel coordinates (``roi_align(aligned=True)`` convention:
    the whole image is ``(0, 0, W, H)``).
    """
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, generator=generator))
    ratio = torch.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * torch.rand(batch, generator=generator))
    w = torch.sqrt(area * ratio).clamp(1.0, width)
    h = torch.sqrt(area / ratio).clamp(1.0, height)
    x1 = (width - w) * torch.rand(batch, generator=generator)
    y1 = (height - h) * torch.rand(batch, generator=generator)
    index = torch.arange(batch, dtype=torch.float32)
    return torch.stack([index, x1, y1, x1 + w, y1 + h], dim=1)


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels (B, size) for per-image ``sigma`` (B,) in pixels."""
    offsets = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - (size - 1) / 2
    kernels = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    return kernels / kernels.sum(dim=1, keepdim=True)


def blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of float (B, C, H, W) with ``sigma`` (B,) in pixels.

    Kernel side: the odd number nearest 10% of the image side (at least 3), as in SimCLR.
    """
    b, c, h, w = images.shape
    size = max(3, int(round(0.1 * h)) // 2 * 2 + 1)
    kernels = _gaussian_kernels(sigma.clamp_min(1e-3), size).repeat_interleave(c, dim=0)  # (B*C, k)
    x = F.pad(images.reshape(1, b * c, h, w), (size // 2,) * 4, mode="reflect")
    x = F.conv2d(x, kernels[:, None, :, None], groups=b * c)
    x = F.conv2d(x, kernels[:, None, None, :], groups=b * c)
    return x.reshape(b, c, h, w)


class ViewAugment:
    """Makes the views a method asks for from a uint8 batch.

    Args:
        spec: the method's :class:`ViewSpec` (number of global/local crops and their scales).
        image_size: side of the global views (local views: ``spec.crop_sizes``).
        in_chans: channels the backbone expects (RGB ↔ grey converted by
            :func:`~sslflow.ssl.preprocess.match_channels`).
        mean, std: per-channel normalisation on the [0, 1] scale.
        config: augmentation strengths.
    """

    def __init__(
        self,
        spec: ViewSpec,
        image_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: AugmentConfig | None = None,
    ) -> None:
        self.spec = spec
        self.sizes = spec.crop_sizes(image_size)
        self.in_chans = in_chans
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.config = config or AugmentConfig()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) → ``spec.n_views`` normalised float32 (B, in_chans, s, s) views.

        Globals come first (side ``image_size``), then locals. ``generator`` is a CPU
        generator; all random draws come from it, so equal seeds give equal views on any device.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"ViewAugment expects uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        x = match_channels(images.float().div_(255.0), self.in_chans)
        views = []
        for index, size in enumerate(self.sizes):
            is_global = index < self.spec.n_global
            scale = self.spec.global_scale if is_global else self.spec.local_scale
            view = self._view(x, size, scale, blur_p=self.config.blur_p if is_global else 0.0, generator=generator)
            views.append(normalise(view, self.mean, self.std))
        return views

    def _view(
        self, x: torch.Tensor, size: int, scale: tuple[float, float], blur_p: float, generator: torch.Generator
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        cfg = self.config
        boxes = crop_boxes(b, h, w, scale, generator).to(x.device)
        view = roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        flip = (torch.rand(b, generator=generator) < cfg.flip_p).to(x.device)
        view = torch.where(flip[:, None, None, None], TF.horizontal_flip(view), view)
        jitter = (torch.rand(b, generator=generator) < cfg.jitter_p).float()
        bright = 1 + jitter * cfg.brightness * (2 * torch.rand(b, generator=generator) - 1)
        contrast = 1 + jitter * cfg.contrast * (2 * torch.rand(b, generator=generator) - 1)
        bright, contrast = bright.to(x.device)[:, None, None, None], contrast.to(x.device)[:, None, None, None]
        view = (view * bright).clamp_(0.0, 1.0)
        grey_mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = ((view - grey_mean) * contrast + grey_mean).clamp_(0.0, 1.0)
        if blur_p > 0:
            applied = torch.rand(b, generator=generator) < blur_p
            low, high = cfg.blur_sigma
            sigma = size * (low + (high - low) * torch.rand(b, generator=generator))
            sigma = torch.where(applied, sigma, torch.full_like(sigma, 1e-3))  # σ→0: identity kernel
            view = blur(view, sigma.to(x.device))
        return view
