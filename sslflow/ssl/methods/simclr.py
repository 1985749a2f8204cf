"""SimCLR: NT-Xent over two views with in-batch negatives (Chen et al., 2020).

Built from lightly's ``SimCLRProjectionHead`` and ``NTXentLoss``. Under DDP the loss gathers
the embeddings of every rank (lightly does this only when a process group is initialised, so
the same module works in one process and under DDP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from sslflow.ssl.methods.base import SSLMethod


@dataclass(frozen=True)
class SimCLRConfig:
    """SimCLR settings.

    Attributes:
        hidden_dim: Width of the projection head's hidden layer (2048 in the paper; 512 is
            plenty for 28 px images and keeps CPU steps cheap).
        output_dim: Width of the embedding the loss sees (128 in the paper).
        num_layers: Linear layers in the projection head (2 = SimCLR v1, 3 = v2).
        temperature: NT-Xent temperature; 0.2 works better than the paper's 0.5 for small
            images and small batches.
        gather_distributed: Gather negatives from all ranks when a process group exists.
    """

    hidden_dim: int = 512
    output_dim: int = 128
    num_layers: int = 2
    temperature: float = 0.2
    gather_distributed: bool = True

    def __post_init__(self) -> None:
        if self.hidden_dim < 1 or self.output_dim < 1 or self.num_layers < 2:
            raise ValueError(
                f"SimCLRConfig needs hidden_dim, output_dim >= 1 and num_layers >= 2, got {self}."
            )
        if self.temperature <= 0:
            raise ValueError(f"SimCLRConfig.temperature must be positive, got {self.temperature}.")


class SimCLR(SSLMethod):
    """SimCLR around any backbone.

    Views: two global crops.
    """

    name = "simclr"

    def __init__(
        self, backbone: nn.Module, feature_dim: int, config: SimCLRConfig | None = None
    ) -> None:
        config = config or SimCLRConfig()
        super().__init__(backbone, feature_dim, config)
        self.projection_head = SimCLRProjectionHead(
            input_dim=feature_dim,
            hidden_dim=config.hidden_dim,
            output_dim=config.output_dim,
            num_layers=config.num_layers,
        )
        self.criterion = NTXentLoss(
            temperature=config.temperature, gather_distributed=config.gather_distributed
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Projection of images (B, C, H, W) -> (B, output_dim), not normalised."""
        return self.projection_head(self.backbone(images))

    def training_step_loss(
        self, views: list[torch.Tensor], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """NT-Xent between the projections of the two global views (see SSLMethod)."""
        self.check_views(views)
        # One backbone pass over both views: BatchNorm sees the 2B batch, as in the paper.
        z = self.embed(torch.cat(views))
        z0, z1 = z.chunk(2)
        loss = self.criterion(z0.float(), z1.float())
        return loss, {}
