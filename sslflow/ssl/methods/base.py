"""The interface every self-supervised method implements, and the views it asks for.

A method owns its heads, losses and method-specific state (momentum encoders, queues,
prototypes); the trainer owns the optimiser, the data and the augmentations. The trainer asks
:meth:`SSLMethod.views` which crops to make, passes them to
:meth:`SSLMethod.training_step_loss`, and calls the two optimiser hooks around each step.
Everything a method needs to resume exactly lives in registered parameters and buffers, so
``state_dict()`` carries it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class ViewSpec:
    """Which crops a method needs for every image of a batch.

    Attributes:
        n_global: Number of large ("global") crops; the views list starts with them.
        n_local: Number of small ("local") crops (SwAV multi-crop); they follow the globals.
        global_scale: Area range of a global crop as a fraction of the image, as in
            torchvision's ``RandomResizedCrop(scale=...)``.
        local_scale: Area range of a local crop as a fraction of the image.
        local_size_ratio: Side of a local crop relative to the image side: SwAV uses 96 px
            local crops for 224 px images, ratio 0.43.
    """

    n_global: int = 2
    n_local: int = 0
    global_scale: tuple[float, float] = (0.2, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.2)
    local_size_ratio: float = 0.43

    def __post_init__(self) -> None:
        if self.n_global < 1 or self.n_local < 0:
            raise ValueError(
                f"ViewSpec needs n_global >= 1 and n_local >= 0, got n_global={self.n_global}, "
                f"n_local={self.n_local}."
            )
        scales = (("global_scale", self.global_scale), ("local_scale", self.local_scale))
        for name, (low, high) in scales:
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(
                    f"ViewSpec.{name}={(low, high)} must satisfy 0 < low <= high <= 1."
                )
        if not 0.0 < self.local_size_ratio <= 1.0:
            raise ValueError(
                f"ViewSpec.local_size_ratio={self.local_size_ratio} must be in (0, 1]: "
                "a local crop cannot be larger than the image."
            )

    @property
    def n_views(self) -> int:
        """Total number of views per image (globals + locals)."""
        return self.n_global + self.n_local

    def crop_sizes(self, image_size: int) -> list[int]:
        """Output side length of every view, globals first, for images of side ``image_size``.

        Raises:
            ValueError: If the image is too small for a local crop of at least 4 pixels.
        """
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        local = round(self.local_size_ratio * image_size)
        if self.n_local and local < 4:
            raise ValueError(
                f"Local crops of {self.local_size_ratio} x {image_size} px = {local} px are too "
                "small; raise local_size_ratio or the image size."
            )
        return [image_size] * self.n_global + [local] * self.n_local


class SSLMethod(nn.Module, ABC):
    """A self-supervised method around a backbone mapping (B, C, H, W) to features (B, D).

    Subclasses are built as ``Method(backbone, feature_dim, config)`` with their own config
    dataclass, set the class attribute ``name`` and implement :meth:`training_step_loss`.

    Attributes:
        name: Registry name of the method (``"simclr"``, ...).
        backbone: The encoder being trained; what gets exported after training.
        feature_dim: Width D of the backbone's pooled features.
        config: The method's config dataclass.
    """

    name: ClassVar[str]

    def __init__(self, backbone: nn.Module, feature_dim: int, config: Any) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(
                f"{type(self).__name__}: feature_dim must be positive, got {feature_dim}."
            )
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.config = config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of float images (B, C, H, W) -> (B, D)."""
        return self.backbone(images)

    def views(self) -> ViewSpec:
        """The crops this method needs (two global views unless overridden)."""
        return ViewSpec()

    @abstractmethod
    def training_step_loss(
        self, views: list[torch.Tensor], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch.

        Args:
            views: Normalised float batches (B, C, H, W) as described by :meth:`views`,
                globals first, then locals; all views hold the same B images in the same order.
            step: Optimiser steps done so far (the trainer's global step).
            epoch: Current epoch, from 0.

        Returns:
            The scalar loss and extra scalars to log (e.g. ``{"temperature_mean": 0.4}``).
        """

    def before_optimizer_step(self, step: int) -> None:
        """Hook called after backward and before ``optimizer.step()``; no-op by default."""

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook called after ``optimizer.step()`` (momentum updates, ...); no-op by default.

        Args:
            step: Optimiser steps done, including the one just taken.
            total_steps: Optimiser steps of the whole training run.
        """

    def check_views(self, views: list[torch.Tensor]) -> None:
        """Fail clearly when the trainer passes views that do not match :meth:`views`."""
        spec = self.views()
        if len(views) != spec.n_views:
            raise ValueError(
                f"{self.name} expects {spec.n_views} views ({spec.n_global} global + "
                f"{spec.n_local} local) per batch, got {len(views)}: build the augmentation "
                "from method.views()."
            )
        batch = views[0].shape[0]
        if any(view.shape[0] != batch for view in views):
            raise ValueError(
                f"{self.name}: all views must hold the same images, got batch sizes "
                f"{[view.shape[0] for view in views]}."
            )
