"""The one contract of everything that turns images into features.

Implemented by :class:`~sslflow.models.frozen.FrozenBackbone` (a trained, timm or random
backbone), curation's PCA-of-pixels embedder and evaluation's raw-pixel baseline; curation
and probing take any of them.
"""

from __future__ import annotations

from typing import Protocol

import torch

from sslflow.models.preprocess import CenterCropResize


class Embedder(Protocol):
    """Maps uint8 image batches (B, C, H, W) to float32 features (B, D)."""

    @property
    def transform(self) -> CenterCropResize:
        """Per-sample transform of uint8 (C, H, W) images applied before batching, so images of
        any size batch and full-resolution photos never sit in memory together."""
        ...

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → float32 (B, D) on the CPU."""
        ...

    def fingerprint(self) -> str:
        """A string that changes whenever the features would (a cache key)."""
        ...
