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

Per-image randomness in one op (each image gets its own crop, flip, jitter, grey and blur):

- random resized crop: boxes drawn as in torchvision's ``RandomResizedCrop`` (area in
  ``scale``, log-uniform aspect ratio in [3/4, 4/3]; a box that does not fit is shrunk to fit
  instead of torchvision's 10 retries) and cut + resized by ``torchvision.ops.roi_align``
  (bilinear, averaging over each output bin, so large crops are antialiased);
- horizontal flip: ``torch.where`` on a per-image coin;
- colour jitter, in SimCLR's order with probability ``jitter_p``: brightness, contrast and
  (RGB only) saturation as per-image factors broadcast over the batch, then (RGB only) hue as
  one 3×3 matrix per image applied by a batched ``einsum``;
- random grayscale (RGB only): ``torch.where`` on a per-image coin, luminance kept as 3 channels;
- Gaussian blur: separable depthwise convolution with one kernel per image.

The colour steps (saturation, hue, grayscale) draw random numbers only when their strength is
above 0: with them off (always, for grey images) the views are bit for bit those made before
the colour steps existed, so grey results (Fashion-MNIST) are unchanged.

kornia offers batched per-sample augmentation but is not a dependency; these ops are ~150
lines on torch and torchvision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from sslflow.models.preprocess import match_channels, normalise
from sslflow.ssl.methods.base import ViewSpec

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# SimCLR colour distortion at strength 0.5 (ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), grayscale p=0.2),
# for the fields brightness/contrast do not already cover.
_RGB_COLOUR = {"saturation": 0.4, "hue": 0.1, "grayscale_p": 0.2}
# RGB → YIQ. Row 0 is torchvision's rgb_to_grayscale luma, so a hue rotation keeps exactly the
# luminance that saturation, grayscale and match_channels use; I and Q rows sum to 0 (grey has
# no chroma). float64 so that the per-image matrices are built without float32 round-off.
_RGB_TO_YIQ = torch.tensor(
    [[0.2989, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class AugmentConfig:
    """Photometric and geometric augmentation strengths (crop scales come from the ViewSpec).

    The dataclass defaults are the grey settings (no colour steps); build RGB settings with
    :meth:`for_channels`, which turns the colour steps on for 3 channels.

    Attributes:
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying colour jitter (brightness, contrast, saturation, hue,
            in that order) to an image.
        brightness: brightness factor drawn from [1 - b, 1 + b] (SimCLR: 0.8 × strength 0.5).
        contrast: contrast factor drawn from [1 - c, 1 + c].
        saturation: RGB only; factor drawn from [1 - s, 1 + s] blending each image with its
            luminance grey (0: grey, 1: unchanged, >1: more saturated). SimCLR: 0.4.
        hue: RGB only; hue shift drawn from [-h, h] of a full turn, h <= 0.5, applied as a
            rotation of the chroma plane in YIQ space (the YIQ approximation of an HSV hue
            shift: it keeps luminance, up to clamping into [0, 1]). SimCLR: 0.2 × 0.5 = 0.1.
        grayscale_p: RGB only; probability of replacing a view by its luminance (kept as 3
            channels), after the jitter. SimCLR: 0.2.
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
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_p: float = 0.0

    @classmethod
    def for_channels(
        cls, in_chans: int, overrides: Mapping[str, Any] | None = None
    ) -> AugmentConfig:
        """Defaults for ``in_chans``-channel images, then ``overrides`` (e.g. a config's dict).

        3 channels get SimCLR's colour distortion (saturation 0.4, hue 0.1, grayscale_p 0.2),
        other channel counts none of it: colour steps need RGB.

        Raises:
            ValueError: an unknown field (the message lists the valid ones), a value out of
                range, or colour steps asked for with ``in_chans != 3``.
        """
        overrides = dict(overrides or {})
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown AugmentConfig field(s) {unknown}; valid fields: {', '.join(valid)}"
            )
        colour = _RGB_COLOUR if in_chans == 3 else {}
        config = cls(**{**colour, **overrides})
        config.check_channels(in_chans)
        return config

    def check_channels(self, in_chans: int) -> None:
        """Refuse colour steps on images that are not RGB, instead of silently skipping them.

        Raises:
            ValueError: saturation, hue or grayscale_p above 0 with ``in_chans != 3``.
        """
        colour = {name: getattr(self, name) for name in _RGB_COLOUR if getattr(self, name) > 0}
        if colour and in_chans != 3:
            raise ValueError(
                f"colour augmentation needs 3 channels, got in_chans={in_chans} with {colour}; "
                "set these fields to 0 for grey images"
            )

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "blur_p", "grayscale_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name}={value} must be a probability in [0, 1]")
        if not 0.0 <= self.brightness < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise ValueError(
                f"brightness and contrast must be in [0, 1), got {self.brightness}, {self.contrast}"
            )
        if not 0.0 <= self.saturation < 1.0:
            raise ValueError(f"AugmentConfig.saturation={self.saturation} must be in [0, 1)")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentConfig.hue={self.hue} must be in [0, 0.5] (turns of the hue)")
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
    area = (
        height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, generator=generator))
    )
    ratio = torch.exp(
        _LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * torch.rand(batch, generator=generator)
    )
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
    size = max(3, round(0.1 * h) // 2 * 2 + 1)
    kernels = _gaussian_kernels(sigma.clamp_min(1e-3), size).repeat_interleave(c, dim=0)  # (B*C, k)
    x = F.pad(images.reshape(1, b * c, h, w), (size // 2,) * 4, mode="reflect")
    x = F.conv2d(x, kernels[:, None, :, None], groups=b * c)
    x = F.conv2d(x, kernels[:, None, None, :], groups=b * c)
    return x.reshape(b, c, h, w)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (B, 1, H, W) of float RGB (B, 3, H, W), as in ``match_channels``."""
    return TF.rgb_to_grayscale(images, num_output_channels=1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend float RGB (B, 3, H, W) with its luminance by per-image ``factor`` (B,), clamped.

    0 gives grey, 1 the image; as torchvision's ``adjust_saturation``, but one factor per image.
    """
    grey = luminance(images)
    return ((images - grey) * factor[:, None, None, None] + grey).clamp_(0.0, 1.0)


def rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Shift the hue of float RGB (B, 3, H, W) by per-image ``turns`` (B,) of a full turn, clamped.

    The YIQ approximation of an HSV hue shift: rotate the chroma plane (I, Q) about the grey
    axis, which keeps luminance and chroma magnitude (until the clamp cuts colours pushed out
    of the RGB cube) and is linear, so one 3×3 matrix per image does it in a batched einsum.
    Positive turns go red → yellow → green, as in HSV. The B matrices are built on the CPU in
    float64 (cheap) and moved to the images.
    """
    angle = -2 * math.pi * turns.to("cpu", torch.float64)  # I-Q angles run red → blue → green
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(turns), 3, 3, dtype=torch.float64)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrices = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(images.device, images.dtype)
    return torch.einsum("bij,bjhw->bihw", matrices, images).clamp_(0.0, 1.0)


class ViewAugment:
    """Makes the views a method asks for from a uint8 batch.

    Args:
        spec: the method's :class:`ViewSpec` (number of global/local crops and their scales).
        image_size: side of the global views (local views: ``spec.crop_sizes``).
        in_chans: channels the backbone expects (RGB ↔ grey converted by
            :func:`~sslflow.models.preprocess.match_channels`); colour steps need 3.
        mean, std: per-channel normalisation on the [0, 1] scale.
        config: augmentation strengths; ``AugmentConfig.for_channels(in_chans)`` by default.

    Raises:
        ValueError: colour steps in ``config`` with ``in_chans != 3``.
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
        self.config = config or AugmentConfig.for_channels(in_chans)
        self.config.check_channels(in_chans)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) → ``spec.n_views`` normalised float32 (B, in_chans, s, s) views.

        Globals come first (side ``image_size``), then locals. ``generator`` is a CPU
        generator; all random draws come from it, so equal seeds give equal views on any device.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"ViewAugment expects uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        x = match_channels(images.float().div_(255.0), self.in_chans)
        views = []
        for index, size in enumerate(self.sizes):
            is_global = index < self.spec.n_global
            scale = self.spec.global_scale if is_global else self.spec.local_scale
            view = self._view(
                x, size, scale, blur_p=self.config.blur_p if is_global else 0.0, generator=generator
            )
            views.append(normalise(view, self.mean, self.std))
        return views

    def _view(
        self,
        x: torch.Tensor,
        size: int,
        scale: tuple[float, float],
        blur_p: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        cfg = self.config
        boxes = crop_boxes(b, h, w, scale, generator).to(x.device)
        view = roi_align(
            x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
        flip = (torch.rand(b, generator=generator) < cfg.flip_p).to(x.device)
        view = torch.where(flip[:, None, None, None], TF.horizontal_flip(view), view)
        jitter = (torch.rand(b, generator=generator) < cfg.jitter_p).float()
        bright = 1 + jitter * cfg.brightness * (2 * torch.rand(b, generator=generator) - 1)
        contrast = 1 + jitter * cfg.contrast * (2 * torch.rand(b, generator=generator) - 1)
        bright, contrast = (
            bright.to(x.device)[:, None, None, None],
            contrast.to(x.device)[:, None, None, None],
        )
        view = (view * bright).clamp_(0.0, 1.0)
        grey_mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = ((view - grey_mean) * contrast + grey_mean).clamp_(0.0, 1.0)
        if cfg.saturation > 0:
            factor = 1 + jitter * cfg.saturation * (2 * torch.rand(b, generator=generator) - 1)
            view = adjust_saturation(view, factor.to(x.device))
        if cfg.hue > 0:
            view = rotate_hue(view, jitter * cfg.hue * (2 * torch.rand(b, generator=generator) - 1))
        if cfg.grayscale_p > 0:
            grey = (torch.rand(b, generator=generator) < cfg.grayscale_p).to(x.device)
            view = torch.where(grey[:, None, None, None], luminance(view).expand_as(view), view)
        if blur_p > 0:
            applied = torch.rand(b, generator=generator) < blur_p
            low, high = cfg.blur_sigma
            sigma = size * (low + (high - low) * torch.rand(b, generator=generator))
            sigma = torch.where(
                applied, sigma, torch.full_like(sigma, 1e-3)
            )  # σ→0: identity kernel
            view = blur(view, sigma.to(x.device))
        return view
