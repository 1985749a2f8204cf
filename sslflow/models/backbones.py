"""Backbones from timm by name, adapted to small images.

``create_backbone`` wraps ``timm.create_model(name, num_classes=0, in_chans=...)`` so that
every backbone maps float images (B, in_chans, H, W) to pooled features (B, D). Two changes
make small images (28-64 px) usable:

- ResNets get the CIFAR-style *small stem*: a 3×3 stride-1 first convolution and no
  max-pool, so a 28 px image keeps a 28×28 first feature map instead of 7×7 (the usual
  stem divides the resolution by 4 before the first residual block).
- ViTs get ``img_size=image_size`` and a patch size suited to the image (4 px up to 32 px,
  8 px up to 64 px, timm's default above), i.e. 7×7 tokens for Fashion-MNIST.

Grey images stay one channel: ``in_chans=1`` builds a first convolution with one input
channel (timm sums the pretrained RGB filters into it) rather than copying the channel 3×.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import timm
from torch import nn

from sslflow.models.hub_weights import resolve_pretrained

# Modules of timm model entry points that build ``VisionTransformer`` (they accept
# ``img_size`` and ``patch_size``).
_VIT_MODULES = frozenset({"timm.models.vision_transformer", "timm.models.deit"})


def vit_patch_size(image_size: int) -> int | None:
    """Patch size for a ViT on ``image_size`` px images; ``None`` keeps timm's default.

    4 px for ≤ 32 px (7×7 tokens at 28 px, 8×8 at 32 px, as in small-image ViT papers),
    8 px for ≤ 64 px.
    """
    if image_size <= 32:
        return 4
    if image_size <= 64:
        return 8
    return None


def is_vit(name: str) -> bool:
    """Whether timm model ``name`` is a ``VisionTransformer`` (accepts img_size/patch_size)."""
    return timm.models.model_entrypoint(name).__module__ in _VIT_MODULES


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` naming close timm models when ``name`` is not a timm model."""
    if timm.models.is_model(name):
        return
    stem = name.split(".")[0]
    close = timm.list_models(f"*{stem}*") or timm.list_models(f"*{stem[:4]}*")
    hint = ", ".join(close[:30]) if close else "see timm.list_models()"
    raise ValueError(f"unknown backbone {name!r}: not a timm model. Close timm names: {hint}")


def _small_stem(model: nn.Module, in_chans: int) -> None:
    """Replace a timm ResNet stem (7×7/2 conv or deep stem, then max-pool) by a 3×3/1 conv.

    The replaced convolution is freshly initialised: ImageNet stem filters have no 3×3
    stride-1 equivalent.
    """
    width = cast(nn.BatchNorm2d, model.bn1).num_features
    conv = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()


def create_backbone(
    name: str,
    in_chans: int = 1,
    image_size: int = 28,
    small_stem: bool = True,
    pretrained: bool | str = False,
) -> tuple[nn.Module, int]:
    """Build a timm backbone without classifier.

    Args:
        name: timm model name, e.g. ``"resnet18"``, ``"resnet10t"``, ``"vit_tiny_patch16_224"``.
        in_chans: input channels (1 for grey images).
        image_size: side of the square training images; sets the ViT patch grid.
        small_stem: for ResNets, use a 3×3 stride-1 first conv and no max-pool (for images
            below ~64 px). ViTs ignore it (their patch size already follows ``image_size``);
            other architectures raise, since a silently ignored option would mislead.
        pretrained: ``False``, ``True`` (timm's hub weights: from the local Hugging Face or
            torch hub cache when there, else downloaded if the hub answers) or a local weights file
            (``.pth``/``.safetensors`` in timm's format) loaded through timm's
            ``pretrained_cfg_overlay=dict(file=...)``, which adapts RGB filters to ``in_chans``
            and drops the classifier.

    Returns:
        ``(module, feature_dim)``: ``module`` maps float (B, in_chans, H, W) to (B, feature_dim).

    Raises:
        ValueError: unknown model name (with close timm names), a missing weights file,
            ``pretrained=True`` with nothing cached and the hub unreachable, or
            ``small_stem`` on an architecture that has no small stem here.
    """
    check_backbone_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
    if is_vit(name):
        kwargs["img_size"] = image_size
        patch = vit_patch_size(image_size)
        if patch is not None:
            kwargs["patch_size"] = patch
    if pretrained is True:  # a cached file loads without the network; else timm downloads
        cached = resolve_pretrained(name)
        pretrained = str(cached) if cached is not None else True
    if isinstance(pretrained, str):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ValueError(
                f"pretrained weights file {path} does not exist (expected timm-format weights)"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if small_stem and not is_vit(name):
        if not isinstance(model, timm.models.resnet.ResNet):
            raise ValueError(
                f"small_stem=True is defined for timm ResNets and ViTs, not {type(model).__name__} "
                f"({name}); set small_stem=False"
            )
        _small_stem(model, in_chans)
    feature_dim = int(cast(int, getattr(model, "head_hidden_size", None) or model.num_features))
    return model, feature_dim
