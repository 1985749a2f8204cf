"""Tensor image preprocessing shared by training, embedding, probing and the exported model.

One geometric path everywhere: :class:`CenterCropResize` (shorter side to ``size``, then a
centred square). It runs per sample in the DataLoader workers, so images of any size and
aspect become equal squares before they are batched, and a full-resolution photo is never
held in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
    raise ValueError(
        f"cannot convert {channels}-channel images to {in_chans} channels (only 1↔3 is defined)"
    )


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float (B, C, H, W) → float32 ``(x/255 - mean) / std`` per channel."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    else:
        images = images.float()
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


class CenterCropResize:
    """Resize (…, C, H, W) images so the shorter side is ``size``, then crop the centred square.

    Works on uint8 and float tensors, one image or a batch; a no-op on ``size`` × ``size``
    images (Fashion-MNIST at 28 px). Antialiased bilinear, as torchvision's ``Resize``. A
    class rather than a closure so DataLoader workers can pickle it.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"CenterCropResize needs a positive size, got {size}")
        self.size = size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] == (self.size, self.size):
            return images
        images = TF.resize(images, self.size, antialias=True)
        return TF.center_crop(images, [self.size, self.size])

    def __repr__(self) -> str:
        return f"CenterCropResize({self.size})"


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images on the [0, 1] scale."""
    x = images.float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
