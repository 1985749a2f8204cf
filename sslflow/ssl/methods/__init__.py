"""Self-supervised methods: SimCLR, MoCo v2/v3, SwAV and adaptive multi-head contrastive (AMCL).

Each method is an :class:`SSLMethod` built as ``Method(backbone, feature_dim, config)``;
:data:`METHODS` maps the names a user types to (class, config dataclass) and
:func:`build_method` builds one with config overrides, failing early on a bad name or field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from sslflow.ssl.methods.amcl import AMCL, AMCLConfig
from sslflow.ssl.methods.base import SSLMethod, ViewSpec
from sslflow.ssl.methods.moco import MoCo, MoCoConfig
from sslflow.ssl.methods.simclr import SimCLR, SimCLRConfig
from sslflow.ssl.methods.swav import SwAV, SwAVConfig

METHODS: dict[str, tuple[type[SSLMethod], type]] = {
    "swav": (SwAV, SwAVConfig),
    "simclr": (SimCLR, SimCLRConfig),
    "moco": (MoCo, MoCoConfig),
    "amcl": (AMCL, AMCLConfig),
}


def build_method(name: str, backbone: nn.Module, feature_dim: int, **overrides: Any) -> SSLMethod:
    """Build the method called ``name`` around ``backbone`` with config fields from ``overrides``.

    Args:
        name: A key of :data:`METHODS` (case-insensitive).
        backbone: Module mapping float (B, C, H, W) to pooled features (B, feature_dim).
        feature_dim: Width of the backbone's features.
        **overrides: Fields of the method's config dataclass; the others keep their defaults.

    Raises:
        ValueError: For an unknown method name or config field (the message lists valid ones).
    """
    key = name.lower()
    if key not in METHODS:
        raise ValueError(
            f"Unknown SSL method {name!r}; valid methods: {', '.join(sorted(METHODS))}."
        )
    method_cls, config_cls = METHODS[key]
    valid = {field.name for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for method {key!r}; "
            f"valid options: {', '.join(sorted(valid))}."
        )
    return method_cls(backbone, feature_dim, config_cls(**overrides))


__all__ = [
    "AMCL",
    "METHODS",
    "AMCLConfig",
    "MoCo",
    "MoCoConfig",
    "SSLMethod",
    "SimCLR",
    "SimCLRConfig",
    "SwAV",
    "SwAVConfig",
    "ViewSpec",
    "build_method",
]
