"""MoCo v2 (queue of negatives) and MoCo v3-style (predictor, symmetric, no queue).

Both keep a momentum copy of the backbone and projection head, updated after every optimiser
step with ``m`` following a cosine schedule from ``momentum_start`` to 1 (MoCo v3, BYOL).
Built from lightly's ``MoCoProjectionHead``, ``NTXentLoss``, ``update_momentum``,
``cosine_schedule`` and ``deactivate_requires_grad``.

- v2 (He et al. 2020; Chen et al. 2020): query = view 0 through the online encoder, key =
  view 1 through the momentum encoder, InfoNCE against a queue of past keys; the keys of all
  ranks are enqueued. The queue is a :class:`PersistentMemoryBank`, so it is checkpointed.
- v3-style (Chen, Xie, He 2021): a BatchNorm predictor on the online branch, loss
  ``ctr(p0, k1) + ctr(p1, k0)``. Deviation: the contrastive term is lightly's NT-Xent
  (in-batch negatives from both branches, gathered across ranks) rather than MoCo v3's
  query-against-keys cross-entropy scaled by 2τ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from sslflow.ssl.methods.base import SSLMethod
from sslflow.ssl.methods.memory import PersistentMemoryBank

VARIANTS = ("v2", "v3")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class MoCoConfig:
    """MoCo settings.

    Attributes:
        variant: ``"v2"`` (queue of negatives) or ``"v3"`` (predictor, symmetric, no queue).
        hidden_dim: Hidden width of the projection head (2048 in v2, 4096 in v3; 512 suits
            28 px images on CPU).
        output_dim: Embedding width (128 in v2, 256 in v3).
        temperature: InfoNCE temperature (0.2 in MoCo v2).
        queue_size: v2 only: number of past keys used as negatives (65536 on ImageNet; a few
            thousand is enough for a 60k-image dataset and keeps keys fresh).
        momentum_start: Momentum of the key encoder at step 0; it rises to 1 with a cosine
            schedule. 0.99 suits short runs (MoCo v3 uses 0.99 to 0.996 for longer ones).
        predictor_hidden_dim: v3 only: hidden width of the predictor.
        gather_distributed: Gather keys (v2 queue) or negatives (v3) across ranks under DDP.
    """

    variant: str = "v2"
    hidden_dim: int = 512
    output_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 4096
    momentum_start: float = 0.99
    predictor_hidden_dim: int = 512
    gather_distributed: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"MoCoConfig.variant={self.variant!r}; valid variants: {', '.join(VARIANTS)}."
            )
        if min(self.hidden_dim, self.output_dim, self.predictor_hidden_dim) < 1:
            raise ValueError(f"MoCoConfig widths must be positive, got {self}.")
        if self.temperature <= 0:
            raise ValueError(f"MoCoConfig.temperature must be positive, got {self.temperature}.")
        if self.variant == "v2" and self.queue_size < 1:
            raise ValueError(f"MoCo v2 needs queue_size >= 1, got {self.queue_size}.")
        if not 0.0 <= self.momentum_start <= 1.0:
            raise ValueError(
                f"MoCoConfig.momentum_start must be in [0, 1], got {self.momentum_start}."
            )


def momentum_at(step: int, total_steps: int, start: float) -> float:
    """Key-encoder momentum after ``step`` of ``total_steps`` steps: cosine from ``start`` to 1."""
    return cosine_schedule(min(step, total_steps), max(total_steps, 1), start, 1.0)


def momentum_copy(module: ModuleT) -> ModuleT:
    """A frozen deep copy of ``module``, to be updated only by :func:`update_momentum`."""
    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


class MoCo(SSLMethod):
    """MoCo v2 or v3-style around any backbone.

    Views: two global crops.
    """

    name = "moco"

    def __init__(
        self, backbone: nn.Module, feature_dim: int, config: MoCoConfig | None = None
    ) -> None:
        config = config or MoCoConfig()
        super().__init__(backbone, feature_dim, config)
        v3 = config.variant == "v3"
        # v2: 2-layer head without BatchNorm; v3: 3-layer head with BatchNorm (lightly's doc).
        self.projection_head = MoCoProjectionHead(
            input_dim=feature_dim,
            hidden_dim=config.hidden_dim,
            output_dim=config.output_dim,
            num_layers=3 if v3 else 2,
            batch_norm=v3,
        )
        self.backbone_momentum = momentum_copy(backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.prediction_head: nn.Module | None = None
        if v3:
            self.prediction_head = MoCoProjectionHead(
                input_dim=config.output_dim,
                hidden_dim=config.predictor_hidden_dim,
                output_dim=config.output_dim,
                num_layers=2,
                batch_norm=True,
            )
        self.criterion = NTXentLoss(
            temperature=config.temperature, gather_distributed=config.gather_distributed
        )
        if not v3:
            # NTXentLoss draws its negatives from `memory_bank` and enqueues the keys after
            # using it (MoCo's order); ours is persistent so the queue is checkpointed.
            self.criterion.memory_bank = PersistentMemoryBank(
                size=(config.queue_size, config.output_dim),
                gather_distributed=config.gather_distributed,
                feature_dim_first=True,
            )

    @property
    def queue(self) -> PersistentMemoryBank | None:
        """The v2 queue of past keys (``None`` for v3); lives in ``criterion.memory_bank``."""
        bank = self.criterion.memory_bank
        return bank if isinstance(bank, PersistentMemoryBank) else None

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Online embedding (B, C, H, W) -> (B, output_dim), through the predictor in v3."""
        z = self.projection_head(self.backbone(images))
        return z if self.prediction_head is None else self.prediction_head(z)

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder embedding (B, C, H, W) -> (B, output_dim), no gradient."""
        return self.projection_head_momentum(self.backbone_momentum(images))

    def training_step_loss(
        self, views: list[torch.Tensor], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """v2: InfoNCE(query 0, key 1, queue); v3: ctr(p0, k1) + ctr(p1, k0) (see SSLMethod)."""
        self.check_views(views)
        if self.prediction_head is None:
            loss = self.criterion(self.query(views[0]).float(), self.key(views[1]).float())
        else:
            p0, p1 = self.query(torch.cat(views)).float().chunk(2)
            k0, k1 = self.key(torch.cat(views)).float().chunk(2)
            loss = self.criterion(p0, k1) + self.criterion(p1, k0)
        return loss, {}

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """EMA of the online encoder into the momentum encoder with the scheduled momentum."""
        m = momentum_at(step, total_steps, self.config.momentum_start)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
