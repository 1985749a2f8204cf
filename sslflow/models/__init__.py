"""Models shared by training, curation and evaluation (plain Python, no Dagster).

One concept per module:

- ``backbones``: timm backbones adapted to small images; ``create_backbone`` gives a module
  mapping float (B, in_chans, H, W) to (B, D).
- ``preprocess``: the one resize/crop/normalise path (``CenterCropResize``, ``match_channels``,
  ``normalise``, ``channel_stats``) used by training, embedding, probing and exported models.
- ``frozen``: ``FrozenBackbone`` (uint8 (B, C, H, W) → float32 (B, feature_dim)), its
  checkpoint format and constructors, and loading/logging through MLflow.
- ``embedder``: the ``Embedder`` protocol every feature extractor satisfies.
- ``hub_weights``: timm's pretrained weights from a local cache, or a fast failure offline.
"""

from sslflow.models.backbones import check_backbone_name, create_backbone, is_vit, vit_patch_size
from sslflow.models.embedder import Embedder
from sslflow.models.frozen import (
    CHECKPOINT_FORMAT,
    PREPROCESS,
    FrozenBackbone,
    backbone_from_checkpoint,
    default_stats,
    load_backbone,
    log_backbone,
    random_backbone,
    save_backbone,
    timm_backbone,
)
from sslflow.models.preprocess import CenterCropResize, channel_stats, match_channels, normalise

__all__ = [
    "CHECKPOINT_FORMAT",
    "PREPROCESS",
    "CenterCropResize",
    "Embedder",
    "FrozenBackbone",
    "backbone_from_checkpoint",
    "channel_stats",
    "check_backbone_name",
    "create_backbone",
    "default_stats",
    "is_vit",
    "load_backbone",
    "log_backbone",
    "match_channels",
    "normalise",
    "random_backbone",
    "save_backbone",
    "timm_backbone",
    "vit_patch_size",
]
