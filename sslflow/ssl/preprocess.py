"""Tensor image preprocessing shared by training views and frozen-backbone embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


def match_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Convert (B, C, H, W) images to ``in_chans`` channels.

    RGB → grey uses ITU-R 601 luminance (torchvision's ``rgb_to_grayscale``); grey → RGB
    expands the channel as a view (no copy). Works on uint8 and float.

    Raises:
        ValueError: a channel count that cannot be converted (e.g. 4 → 1).
    """
    channels = images.shape[1]
    if channels == in_chans:
        return images
    if channels == 3 and in_chans == 1:
        return TF.rgb_to_grayscale(images, num_output_channels=1)
    if channels == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot convert {channels}-channel images to {in_chans} channels (only 1↔3 is defined)")


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float (B, C, H, W) → float32 ``(x/255 - mean) / std`` per channel."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    else:
        images = images.float()
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float (B, C, H, W) to (B, C, size, size) with antialiased bilinear interpolation."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images on the [0, 1] scale."""
    x = images.float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
