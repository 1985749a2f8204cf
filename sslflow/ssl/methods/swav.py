"""SwAV: swapped prediction of Sinkhorn codes, multi-crop and a queue (Caron et al. 2020).

Built from lightly's ``SwaVProjectionHead``, ``SwaVPrototypes`` (one or several prototype
sets) and ``SwaVLoss`` (Sinkhorn-Knopp, gathered over all ranks under DDP). What lightly
lacks is written here:

- The queue of past embeddings (SwAV's ``queue_length`` / ``epoch_queue_starts``): one
  :class:`PersistentMemoryBank` per global crop holding projected, normalised embeddings of
  earlier batches; from ``queue_start_epoch`` on they are enqueued, and once a queue is full
  their prototype scores (recomputed with the current prototypes) join the Sinkhorn input so
  small batches still get balanced codes. As in SwAV, each rank keeps its own queue.
- Freezing the prototypes for the first steps by dropping their gradients before the
  optimiser step, as SwAV does. lightly's ``n_steps_frozen_prototypes`` toggles
  ``requires_grad`` inside ``forward`` instead, which DDP does not allow after wrapping.
- Sinkhorn and the loss run in float32 with autocast disabled: ``exp(score / 0.05)``
  overflows in float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.loss.swav_loss import sinkhorn
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from torch import nn

from sslflow.ssl.methods.base import SSLMethod, ViewSpec
from sslflow.ssl.methods.memory import PersistentMemoryBank, banks


@dataclass(frozen=True)
class SwAVConfig:
    """SwAV settings.

    Attributes:
        hidden_dim: Hidden width of the projection head (2048 in the paper).
        output_dim: Embedding width the prototypes live in (128 in the paper).
        n_prototypes: Size of each prototype set; several sizes = multi-head SwAV, whose
            losses are averaged. 3000 suits ImageNet; a few hundred suits 10-class data.
        temperature: Softmax temperature of the swapped prediction (0.1 in the paper).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3 in the paper).
        sinkhorn_epsilon: Entropic regularisation of Sinkhorn-Knopp (0.05 in the paper).
        freeze_prototypes_steps: Optimiser steps during which the prototypes get no update
            (the paper freezes them for the first epoch so they don't collapse early).
        n_local: Number of small crops per image (6 in the paper; 4 keeps CPU steps cheap).
        global_scale: Area range of the two global crops (paper: 0.14 to 1).
        local_scale: Area range of the local crops (paper: 0.05 to 0.14).
        local_size_ratio: Local crop side / image side (paper: 96 / 224).
        queue_length: Embeddings kept per global crop and rank; 0 disables the queue (paper:
            3840 for batches of 256 or less).
        queue_start_epoch: First epoch that fills the queue (paper: 15).
    """

    hidden_dim: int = 512
    output_dim: int = 128
    n_prototypes: tuple[int, ...] = (512,)
    temperature: float = 0.1
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    freeze_prototypes_steps: int = 300
    n_local: int = 4
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.14)
    local_size_ratio: float = 0.43
    queue_length: int = 0
    queue_start_epoch: int = 15

    def __post_init__(self) -> None:
        # YAML and the CLI give lists; keep the frozen dataclass hashable and comparable.
        object.__setattr__(self, "n_prototypes", tuple(int(n) for n in self.n_prototypes))
        object.__setattr__(self, "global_scale", tuple(self.global_scale))
        object.__setattr__(self, "local_scale", tuple(self.local_scale))
        if not self.n_prototypes or min(self.n_prototypes) < 1:
            raise ValueError(
                f"SwAVConfig.n_prototypes needs positive sizes, got {self.n_prototypes}."
            )
        if min(self.hidden_dim, self.output_dim, self.sinkhorn_iterations) < 1:
            raise ValueError(
                f"SwAVConfig widths and sinkhorn_iterations must be positive, got {self}."
            )
        if self.temperature <= 0 or self.sinkhorn_epsilon <= 0:
            raise ValueError(
                f"SwAVConfig.temperature ({self.temperature}) and sinkhorn_epsilon "
                f"({self.sinkhorn_epsilon}) must be positive."
            )
        if min(self.freeze_prototypes_steps, self.queue_length, self.queue_start_epoch) < 0:
            raise ValueError(
                "SwAVConfig.freeze_prototypes_steps, queue_length and queue_start_epoch must be "
                f">= 0, got {self}."
            )
        ViewSpec(
            n_local=self.n_local,
            global_scale=self.global_scale,
            local_scale=self.local_scale,
            local_size_ratio=self.local_size_ratio,
        )


class SwAV(SSLMethod):
    """SwAV with multi-crop, one or several prototype sets and an optional queue.

    Views: two global crops, then ``n_local`` local crops.
    """

    name = "swav"

    def __init__(
        self, backbone: nn.Module, feature_dim: int, config: SwAVConfig | None = None
    ) -> None:
        config = config or SwAVConfig()
        super().__init__(backbone, feature_dim, config)
        self.projection_head = SwaVProjectionHead(feature_dim, config.hidden_dim, config.output_dim)
        # Always a list: SwaVPrototypes then returns one score tensor per prototype set.
        self.prototypes = SwaVPrototypes(config.output_dim, n_prototypes=list(config.n_prototypes))
        self.criterion = SwaVLoss(
            temperature=config.temperature,
            sinkhorn_iterations=config.sinkhorn_iterations,
            sinkhorn_epsilon=config.sinkhorn_epsilon,
            # Only gathers when a process group is initialised at call time.
            sinkhorn_gather_distributed=torch.distributed.is_available(),
        )
        self.queues = nn.ModuleList(
            PersistentMemoryBank(size=(config.queue_length, config.output_dim))
            for _ in range(self.views().n_global if config.queue_length else 0)
        )

    def views(self) -> ViewSpec:
        """Two global crops and ``n_local`` local crops, as configured."""
        return ViewSpec(
            n_global=2,
            n_local=self.config.n_local,
            global_scale=self.config.global_scale,
            local_scale=self.config.local_scale,
            local_size_ratio=self.config.local_size_ratio,
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection (B, C, H, W) -> (B, output_dim), float32."""
        return F.normalize(self.projection_head(self.backbone(images)).float(), dim=1)

    def training_step_loss(
        self, views: list[torch.Tensor], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Swapped-prediction loss averaged over the prototype sets (see SSLMethod)."""
        self.check_views(views)
        self.prototypes.normalize()
        n_global, n_local = self.views().n_global, self.views().n_local
        # One backbone pass per crop resolution (SwAV's multi-crop forward).
        z_global = self.embed(torch.cat(views[:n_global])).chunk(n_global)
        z_local = self.embed(torch.cat(views[n_global:])).chunk(n_local) if n_local else ()
        use_queue = bool(self.queues) and epoch >= self.config.queue_start_epoch
        queue_ready = use_queue and all(queue.is_full for queue in banks(self.queues))
        with torch.autocast(device_type=views[0].device.type, enabled=False):
            scores_global = [self.prototypes(z) for z in z_global]
            scores_local = [self.prototypes(z) for z in z_local]
            scores_queue = None
            if queue_ready:
                scores_queue = [self.prototypes(queue.entries()) for queue in banks(self.queues)]
            losses = []
            for head in range(len(self.config.n_prototypes)):
                losses.append(
                    self.criterion(
                        [scores[head] for scores in scores_global],
                        [scores[head] for scores in scores_local],
                        None if scores_queue is None else [scores[head] for scores in scores_queue],
                    )
                )
            loss = torch.stack(losses).mean()
        if use_queue:
            for queue, z in zip(banks(self.queues), z_global):
                queue.push(z)
        return loss, {"queue_used": float(queue_ready)}

    def before_optimizer_step(self, step: int) -> None:
        """Drop the prototype gradients while ``step < freeze_prototypes_steps``.

        ``grad = None`` (as in SwAV's code) makes SGD/AdamW skip the prototypes entirely,
        weight decay included, while DDP still sees a gradient for every parameter.
        """
        if step < self.config.freeze_prototypes_steps:
            for parameter in self.prototypes.parameters():
                parameter.grad = None

    @torch.no_grad()
    def assignments(self, images: torch.Tensor, head: int = 0) -> torch.Tensor:
        """Sinkhorn codes of images (B, C, H, W) for prototype set ``head`` -> (B, n_prototypes)."""
        scores = self.prototypes(self.embed(images))[head]
        return sinkhorn(scores, self.config.sinkhorn_iterations, self.config.sinkhorn_epsilon)
