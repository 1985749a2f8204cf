"""Adaptive Multi-head Contrastive Learning (AMCL; Wang, Koniusz, Gedeon, Zheng, ECCV 2024).

Written by hand: no maintained library implements AMCL, and the authors' published code
departs from the paper (issue 4), so it is not followed. This module implements the paper's
formulation as we read it (Sec. 4, "Approach": maximum likelihood over head-wise posteriors of
the positive sample); we could not check the equation numbers offline, so they are not quoted here.

For every head ``c = 1..C`` (C projection heads on the shared backbone, default 3) and every
anchor ``i`` with candidate set ``J(i)`` (its positive ``p(i)`` and its negatives):

    s_ij^c   = <z_i^c, z_j^c>                         cosine similarity (unit-norm embeddings)
    tau_ij^c = T_c(z_i^c, z_j^c, s_ij^c) in (0, tau_max), tau_max = 2      pair temperature
    l_ij^c   = s_ij^c / tau_ij^c - lambda * log Z(tau_ij^c)                 pair logit
    log Z(tau) = log int_{-1}^{1} exp(s / tau) ds = 1/tau + log tau + log(1 - exp(-2/tau))
    L^c(i)   = -log( exp(l_{i,p(i)}^c) / sum_{j in J(i)} exp(l_ij^c) )
    L        = sum_c mean_i L^c(i)                                           heads summed

``s / tau`` is each pair's similarity divided by its own temperature. ``log Z(tau)`` is the
log-normaliser of the pair likelihood ``p(s | tau) = exp(s / tau) / Z(tau)``: it is the
paper's log-temperature regulariser (``log tau``) plus the ``1/tau`` and boundary terms of the
same normaliser. Without it (``lambda = 0``) the softmax has a degenerate optimum: a tiny
temperature on the positive and ``tau_max`` on every negative drive the loss to 0 as soon as
``s_pos > 0``, whatever the negatives look like. With it, a tiny temperature costs
``(1 - s) / tau`` unless the pair is almost identical: the positive's own likelihood is best
at ``tau`` about ``1 - s_pos``, and since the network sees only ``(z_i, z_j, s)``, not which
pair is the positive, it cannot sharpen positives without sharpening equally similar
negatives. If every pair shares one temperature the extra terms cancel, so AMCL reduces
exactly to NT-Xent / InfoNCE with that temperature (a property the tests check).

The temperature network ``T_c`` is symmetric in its pair, so ``tau_ij = tau_ji``:

    T_c(z_i, z_j, s) = tau_max * sigmoid(w^T GELU(W z_i + W z_j + u s + b) + b_out)

(squeezed into [0.001, 0.999] * tau_max so float32 rounding never reaches 0 or tau_max),

i.e. an MLP on ``[z_i, z_j, s]`` whose first layer shares its weights between the two
embeddings (a sum-pooled "deep set" of the pair). Sharing makes it symmetric by
construction and cheap: ``W z`` is computed once per embedding and the pair tensor is only
(anchors, candidates, hidden). ``s`` is an explicit input because a sum of the two
projections cannot recover their inner product. ``w`` starts at zero so every temperature
starts at ``initial_temperature``.

Deviations and choices: the temperature network sees detached embeddings and similarities,
so the encoder cannot lower the loss by steering temperatures (the gradient of the loss
still reaches the encoder through ``s / tau``); ``tau`` is bounded to (0, 2) by the scaled
sigmoid; the SimCLR form uses in-batch negatives gathered across ranks (2B - 2 per anchor, as
NT-Xent), the MoCo form uses v2's momentum encoder and one queue of past keys per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.utils import update_momentum
from lightly.utils import dist as lightly_dist
from torch import nn

from sslflow.ssl.methods.base import SSLMethod
from sslflow.ssl.methods.memory import PersistentMemoryBank, banks
from sslflow.ssl.methods.moco import momentum_at, momentum_copy

BASES = ("simclr", "moco")
EDGE = 1e-3  # temperatures lie in [EDGE, 1 - EDGE] * max_temperature


@dataclass(frozen=True)
class AMCLConfig:
    """AMCL settings.

    Attributes:
        base: ``"simclr"`` (in-batch negatives) or ``"moco"`` (momentum encoder and a queue
            of negatives per head, MoCo v2 style).
        n_heads: Number of projection heads C (3 in the paper).
        hidden_dim: Hidden width of each projection head.
        output_dim: Embedding width of each head.
        temperature_hidden_dim: Hidden width of each temperature network; the pair tensor
            is (anchors, candidates, this), so keep it small with a large MoCo queue.
        max_temperature: Upper bound of the pair temperatures (2 in the paper).
        initial_temperature: Temperature of every pair at initialisation.
        regularization_weight: Weight lambda of the log-normaliser term (see the module
            docstring); 1 is the likelihood, 0 removes the regulariser.
        queue_size: ``moco`` only: negatives kept per head. Half MoCo's default because
            every query is paired with every entry in the temperature network: the pair
            tensor is (batch, queue_size, temperature_hidden_dim) per head.
        momentum_start: ``moco`` only: key-encoder momentum at step 0, cosine to 1.
        gather_distributed: Gather negatives (simclr) or keys (moco) across ranks under DDP.
    """

    base: str = "simclr"
    n_heads: int = 3
    hidden_dim: int = 512
    output_dim: int = 128
    temperature_hidden_dim: int = 16
    max_temperature: float = 2.0
    initial_temperature: float = 0.2
    regularization_weight: float = 1.0
    queue_size: int = 2048
    momentum_start: float = 0.99
    gather_distributed: bool = True

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"AMCLConfig.base={self.base!r}; valid bases: {', '.join(BASES)}.")
        sizes = (self.n_heads, self.hidden_dim, self.output_dim, self.temperature_hidden_dim)
        if min(*sizes, self.queue_size) < 1:
            raise ValueError(f"AMCLConfig counts and widths must be positive, got {self}.")
        if not EDGE < self.initial_temperature / self.max_temperature < 1.0 - EDGE:
            raise ValueError(
                f"AMCLConfig needs 0 < initial_temperature ({self.initial_temperature}) < "
                f"max_temperature ({self.max_temperature})."
            )
        if self.regularization_weight < 0:
            raise ValueError(
                f"AMCLConfig.regularization_weight must be >= 0, got {self.regularization_weight}."
            )
        if not 0.0 <= self.momentum_start <= 1.0:
            raise ValueError(
                f"AMCLConfig.momentum_start must be in [0, 1], got {self.momentum_start}."
            )


class TemperatureNet(nn.Module):
    """Symmetric pair temperature ``tau_max * sigmoid(w^T GELU(W z_i + W z_j + u s + b) + b_out)``.

    The sigmoid is squeezed into [EDGE, 1 - EDGE] so that float32 rounding never yields a
    temperature of exactly 0 or ``max_temperature``.

    Args:
        dim: Width of the embeddings.
        hidden_dim: Width of the hidden layer.
        max_temperature: Upper bound of the output.
        initial_temperature: Output for every pair at initialisation.
    """

    def __init__(
        self, dim: int, hidden_dim: int, max_temperature: float, initial_temperature: float
    ) -> None:
        super().__init__()
        self.max_temperature = max_temperature
        self.embed = nn.Linear(dim, hidden_dim, bias=False)
        self.similarity = nn.Linear(1, hidden_dim)
        self.out = nn.Linear(hidden_dim, 1)
        nn.init.zeros_(self.out.weight)
        ratio = (initial_temperature / max_temperature - EDGE) / (1.0 - 2.0 * EDGE)
        nn.init.constant_(self.out.bias, math.log(ratio / (1.0 - ratio)))

    def forward(
        self, left: torch.Tensor, right: torch.Tensor, similarity: torch.Tensor
    ) -> torch.Tensor:
        """Temperatures of pairs (left, right) with their similarities.

        Args:
            left: Embeddings (..., D), broadcastable against ``right``, e.g. (A, 1, D).
            right: Embeddings (..., D), e.g. (1, N, D).
            similarity: Similarities of the pairs, the broadcast shape without D, e.g. (A, N).

        Returns:
            Temperatures in (0, max_temperature), shaped like ``similarity``.
        """
        hidden = self.embed(left) + self.embed(right) + self.similarity(similarity.unsqueeze(-1))
        unit = torch.sigmoid(self.out(F.gelu(hidden)).squeeze(-1))
        # sigmoid rounds to exactly 0 or 1 in float32 for large logits; the margin keeps every
        # temperature strictly inside (0, max_temperature), so s / tau stays finite.
        return self.max_temperature * (EDGE + (1.0 - 2.0 * EDGE) * unit)


def log_partition(temperature: torch.Tensor) -> torch.Tensor:
    """``log int_{-1}^{1} exp(s / tau) ds = 1/tau + log tau + log(1 - exp(-2/tau))``, elementwise.

    Written in this form because ``2 tau sinh(1 / tau)`` overflows for small ``tau``.
    """
    return 1.0 / temperature + torch.log(temperature) + torch.log1p(-torch.exp(-2.0 / temperature))


def adaptive_info_nce(
    similarity: torch.Tensor,
    temperature: torch.Tensor,
    positive: torch.Tensor,
    regularization_weight: float,
    excluded: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with one temperature per pair and the log-normaliser regulariser.

    Args:
        similarity: Cosine similarities (A, N) of A anchors with N candidates.
        temperature: Pair temperatures (A, N), positive.
        positive: Index (A,) of each anchor's positive among its candidates.
        regularization_weight: Weight lambda of ``log Z(tau)`` in the pair logits.
        excluded: Optional boolean mask (A, N) of candidates that are no candidate at all
            (an anchor paired with itself).

    Returns:
        Mean over anchors of ``-log softmax(s / tau - lambda log Z(tau))[positive]``.
    """
    logits = similarity / temperature - regularization_weight * log_partition(temperature)
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, positive)


class AMCL(SSLMethod):
    """Adaptive multi-head contrastive learning over SimCLR or MoCo (see the module docstring).

    Views: two global crops.
    """

    name = "amcl"

    def __init__(
        self, backbone: nn.Module, feature_dim: int, config: AMCLConfig | None = None
    ) -> None:
        config = config or AMCLConfig()
        super().__init__(backbone, feature_dim, config)
        head_cls = SimCLRProjectionHead if config.base == "simclr" else MoCoProjectionHead
        self.heads = nn.ModuleList(
            head_cls(
                input_dim=feature_dim, hidden_dim=config.hidden_dim, output_dim=config.output_dim
            )
            for _ in range(config.n_heads)
        )
        self.temperature_nets = nn.ModuleList(
            TemperatureNet(
                config.output_dim,
                config.temperature_hidden_dim,
                config.max_temperature,
                config.initial_temperature,
            )
            for _ in range(config.n_heads)
        )
        self.backbone_momentum: nn.Module | None = None
        self.heads_momentum: nn.ModuleList | None = None
        self.queues = nn.ModuleList()
        if config.base == "moco":
            self.backbone_momentum = momentum_copy(backbone)
            self.heads_momentum = momentum_copy(self.heads)
            self.queues.extend(
                PersistentMemoryBank(
                    size=(config.queue_size, config.output_dim),
                    gather_distributed=config.gather_distributed,
                )
                for _ in range(config.n_heads)
            )

    def training_step_loss(
        self, views: list[torch.Tensor], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over heads of the adaptive-temperature InfoNCE (see SSLMethod)."""
        self.check_views(views)
        if self.config.base == "simclr":
            return self._simclr_loss(views)
        return self._moco_loss(views)

    def _simclr_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """In-batch form: 2B anchors, each against the other 2B - 1 views of all ranks."""
        features = self.backbone(torch.cat(views))
        batch = views[0].shape[0]
        local = torch.arange(2 * batch, device=features.device)
        offset = lightly_dist.rank() * 2 * batch
        gather = self.config.gather_distributed and lightly_dist.world_size() > 1
        # Heads run under the caller's autocast; similarities and temperatures in float32.
        projections = [head(features) for head in self.heads]
        losses, temps_pos, temps_neg = [], [], []
        with torch.autocast(device_type=features.device.type, enabled=False):
            for projection, temperature_net in zip(projections, self.temperature_nets):
                z = F.normalize(projection.float(), dim=1)
                candidates = torch.cat(lightly_dist.gather(z)) if gather else z
                similarity = z @ candidates.T
                temperature = temperature_net(
                    z.detach().unsqueeze(1), candidates.detach().unsqueeze(0), similarity.detach()
                )
                excluded = torch.zeros_like(similarity, dtype=torch.bool)
                excluded[local, offset + local] = True
                positive = offset + (local + batch) % (2 * batch)
                weight = self.config.regularization_weight
                losses.append(
                    adaptive_info_nce(similarity, temperature, positive, weight, excluded)
                )
                is_positive = torch.zeros_like(excluded)
                is_positive[local, positive] = True
                temps_pos.append(temperature[is_positive])
                temps_neg.append(temperature[~(is_positive | excluded)])
        return torch.stack(losses).sum(), self._logs(losses, temps_pos, temps_neg)

    def _moco_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Queue form: query = view 0 (online), key = view 1 (momentum), negatives = queue."""
        if self.backbone_momentum is None or self.heads_momentum is None:
            raise RuntimeError("AMCL's MoCo form needs the momentum encoder built by base='moco'.")
        features = self.backbone(views[0])
        queries = [head(features) for head in self.heads]
        with torch.no_grad():
            features_momentum = self.backbone_momentum(views[1])
            keys = [head(features_momentum) for head in self.heads_momentum]
        losses, temps_pos, temps_neg = [], [], []
        with torch.autocast(device_type=features.device.type, enabled=False):
            for query, key, temperature_net, queue in zip(
                queries, keys, self.temperature_nets, banks(self.queues)
            ):
                q = F.normalize(query.float(), dim=1)
                k = F.normalize(key.float(), dim=1)
                negatives = queue.entries().to(q.device)
                similarity_pos = (q * k).sum(dim=1)
                similarity_neg = q @ negatives.T
                q_in = q.detach()
                temperature_pos = temperature_net(q_in, k, similarity_pos.detach())
                temperature_neg = temperature_net(
                    q_in.unsqueeze(1), negatives.unsqueeze(0), similarity_neg.detach()
                )
                similarity = torch.cat([similarity_pos.unsqueeze(1), similarity_neg], dim=1)
                temperature = torch.cat([temperature_pos.unsqueeze(1), temperature_neg], dim=1)
                positive = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
                weight = self.config.regularization_weight
                losses.append(adaptive_info_nce(similarity, temperature, positive, weight))
                temps_pos.append(temperature_pos)
                temps_neg.append(temperature_neg.flatten())
                queue.push(k)
        return torch.stack(losses).sum(), self._logs(losses, temps_pos, temps_neg)

    @staticmethod
    def _logs(
        losses: list[torch.Tensor], temps_pos: list[torch.Tensor], temps_neg: list[torch.Tensor]
    ) -> dict[str, float]:
        """Per-head losses and temperature statistics for the progress bar and MLflow."""
        logs = {f"loss_head{c}": float(loss.detach()) for c, loss in enumerate(losses)}
        positive = torch.cat(temps_pos).detach()
        negative = torch.cat(temps_neg).detach()
        logs["temperature_positive_mean"] = float(positive.mean())
        logs["temperature_negative_mean"] = float(negative.mean())
        logs["temperature_mean"] = float(torch.cat([positive, negative]).mean())
        return logs

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """``moco`` base: EMA of backbone and heads into the momentum copies."""
        if self.backbone_momentum is None or self.heads_momentum is None:
            return
        m = momentum_at(step, total_steps, self.config.momentum_start)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.heads, self.heads_momentum, m)
