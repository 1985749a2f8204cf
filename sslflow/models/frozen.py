"""Frozen backbones: build, save, load (file or MLflow model URI) and embed uint8 images.

A backbone checkpoint written by :func:`save_backbone` is a plain dict that
``torch.load(..., weights_only=True)`` reads::

    {"format": "sslflow.backbone/1",
     "config": {"name", "in_chans", "image_size", "small_stem", "mean", "std", "feature_dim"},
     "state_dict": {parameter name: tensor}}

The same backbone logged to MLflow (:func:`log_backbone`) is an MLflow ``pytorch`` model with
that config in its ``metadata`` and this checkpoint beside it; :func:`load_backbone` reads the
checkpoint, so loading a model URI never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sslflow.devices import inference_autocast
from sslflow.models.backbones import create_backbone
from sslflow.models.preprocess import CenterCropResize, match_channels, normalise

if TYPE_CHECKING:
    from sslflow.tracking.registry import LoggedModelRef

CHECKPOINT_FORMAT = "sslflow.backbone/1"
CHECKPOINT_FILE = "backbone.pt"  # the checkpoint's name beside a logged MLflow model
# The description of every registered version: MLflow's pytorch flavour is a pickle.
LOADING_NOTE = (
    "Loading this model with mlflow.pytorch.load_model (or mlflow.pyfunc.load_model) unpickles "
    "the Python objects stored with it, which can run code: do that only for models from a "
    "tracking server whose writers you trust. To load the weights only, with no unpickling: "
    "sslflow.models.load_backbone('models:/<name>/<version>') reads the plain state dict "
    f"{CHECKPOINT_FILE}, stored beside MLmodel, with torch.load(weights_only=True); any other "
    f"program can download {CHECKPOINT_FILE} and load it the same way."
)
METADATA_KEY = "sslflow_backbone"
# The evaluation transform every consumer of a backbone applies (see ``FrozenBackbone.transform``).
PREPROCESS = (
    "shorter side to image_size, centre crop, [0, 1], channels to in_chans, (x - mean) / std"
)


def default_stats(module: nn.Module, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """timm's normalisation for ``module`` (ImageNet unless its config says otherwise).

    For one channel the RGB values are averaged, matching timm's summed grey filters.
    """
    cfg = getattr(module, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    if in_chans == len(mean):
        return mean, std
    if in_chans == 1:
        return (round(sum(mean) / len(mean), 4),), (round(sum(std) / len(std), 4),)
    raise ValueError(
        f"no default normalisation for in_chans={in_chans}; give mean and std explicitly"
    )


@dataclass
class FrozenBackbone:
    """A backbone in eval mode with frozen weights plus what is needed to feed it.

    Attributes:
        module: maps float (B, in_chans, image_size, image_size) to (B, feature_dim).
        name: timm model name.
        in_chans: channels the module expects.
        image_size: side of the square images it was trained on.
        mean: per-channel normalisation mean (on the [0, 1] scale), ``in_chans`` values.
        std: per-channel normalisation std, ``in_chans`` values.
        feature_dim: width D of the features.
        small_stem: whether a ResNet uses the 3×3 stride-1 stem (needed to rebuild it).
    """

    module: nn.Module
    name: str
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int
    small_stem: bool = True
    _device: torch.device = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values, got {self.mean} / {self.std}")
        self.module.eval()
        self.module.requires_grad_(False)
        first = next(self.module.parameters(), None)
        self._device = first.device if first is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> FrozenBackbone:
        """Move the module to ``device`` (in place); returns ``self``."""
        self.module.to(device)
        self._device = torch.device(device)
        return self

    @property
    def transform(self) -> CenterCropResize:
        """The per-sample evaluation transform (resize + centre crop to ``image_size``).

        Readers apply it to each uint8 (C, H, W) image before batching, so images of any size
        batch and full-resolution photos never sit in memory together.
        """
        return CenterCropResize(self.image_size)

    def config(self) -> dict[str, Any]:
        """JSON-able description used to rebuild the module (checkpoint and MLflow metadata)."""
        return {
            "preprocess": PREPROCESS,
            "name": self.name,
            "in_chans": self.in_chans,
            "image_size": self.image_size,
            "small_stem": self.small_stem,
            "mean": list(self.mean),
            "std": list(self.std),
            "feature_dim": self.feature_dim,
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → normalised float32 (B, in_chans, image_size, image_size).

        See :data:`PREPROCESS`; batches already cut by :attr:`transform` are only normalised.
        """
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        x = self.transform(images.to(self._device))
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)  # before the channel conversion, so luminance is not rounded
        return normalise(match_channels(x, self.in_chans), self.mean, self.std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch: uint8 (B, C, H, W) → float32 (B, feature_dim) on the CPU.

        Images are resized and centre-cropped to ``image_size`` when needed, scaled to [0, 1],
        channels converted (RGB → grey by luminance, grey → RGB by expansion) and normalised.
        On a CUDA device the forward pass runs under bf16 autocast where the GPU supports it.
        """
        with torch.inference_mode(), inference_autocast(self._device):
            return self.module(self.preprocess(images)).float().cpu()

    def fingerprint(self) -> str:
        """sha256 of the config and every state_dict tensor (cache key for feature files)."""
        digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for key, tensor in sorted(self.module.state_dict().items()):
            digest.update(key.encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
        return digest.hexdigest()


def _frozen(
    module: nn.Module,
    feature_dim: int,
    name: str,
    in_chans: int,
    image_size: int,
    small_stem: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> FrozenBackbone:
    if mean is None or std is None:
        mean, std = default_stats(module, in_chans)
    return FrozenBackbone(
        module, name, in_chans, image_size, tuple(mean), tuple(std), feature_dim, small_stem
    )


def random_backbone(
    name: str, in_chans: int = 1, image_size: int = 28, seed: int = 0, small_stem: bool = True
) -> FrozenBackbone:
    """A randomly initialised backbone (the probing baseline), identical for identical arguments."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, dim = create_backbone(name, in_chans, image_size, small_stem)
    return _frozen(module, dim, name, in_chans, image_size, small_stem)


def timm_backbone(
    name: str,
    pretrained: bool | str,
    in_chans: int = 3,
    image_size: int = 224,
    small_stem: bool = False,
) -> FrozenBackbone:
    """A timm backbone with its pretrained weights (hub or local file) and timm's normalisation."""
    module, dim = create_backbone(name, in_chans, image_size, small_stem, pretrained)
    return _frozen(module, dim, name, in_chans, image_size, small_stem)


def save_backbone(backbone: FrozenBackbone, path: str | os.PathLike[str]) -> Path:
    """Write ``backbone`` in the sslflow checkpoint format (atomically: temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": backbone.config(),
        "state_dict": {k: v.detach().cpu() for k, v in backbone.module.state_dict().items()},
    }
    partial = target.with_name(target.name + ".partial")
    torch.save(payload, partial)
    partial.replace(target)
    return target


def backbone_from_checkpoint(payload: dict[str, Any], where: str) -> FrozenBackbone:
    """Rebuild a :class:`FrozenBackbone` from a loaded sslflow checkpoint dict."""
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{where} is not an sslflow backbone checkpoint (format={payload.get('format')!r})"
        )
    cfg = payload["config"]
    module, dim = create_backbone(
        cfg["name"], cfg["in_chans"], cfg["image_size"], cfg["small_stem"]
    )
    module.load_state_dict(payload["state_dict"])
    return _frozen(
        module,
        dim,
        cfg["name"],
        cfg["in_chans"],
        cfg["image_size"],
        cfg["small_stem"],
        cfg["mean"],
        cfg["std"],
    )


def load_backbone(spec: str | os.PathLike[str], tracking_uri: str | None = None) -> FrozenBackbone:
    """Load a backbone from an sslflow checkpoint file or an MLflow model URI.

    Args:
        spec: a file written by :func:`save_backbone` (or a training checkpoint folder's
            ``backbone.pt``), or an MLflow model URI of a model logged by :func:`log_backbone`:
            ``models:/sslflow-<method>@<alias>``, ``models:/<name>/<version>``,
            ``models:/<name>/latest`` or ``models:/<model id>``.
        tracking_uri: MLflow tracking and registry URI for model URIs (default: MLflow's own).

    Raises:
        FileNotFoundError: ``spec`` is neither a model URI nor an existing file.
        ValueError: the model URI cannot be resolved (the message lists registered models and
            their aliases), or the model was not logged by sslflow.
    """
    from sslflow.tracking import registry  # lazy: mlflow takes seconds to import

    text = str(spec)
    if registry.is_model_uri(text):
        return _load_logged(text, tracking_uri)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone {text!r} is neither a file nor an MLflow model URI "
            f"({', '.join(registry.MODEL_URI_SCHEMES)})"
        )
    return backbone_from_checkpoint(_read_checkpoint(path), str(path))


def _read_checkpoint(path: Path, name: str = "") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``name``: what to call it), loaded weights-only.

    Raises:
        ValueError: the file is not a weights-only checkpoint dict; sslflow never falls back
            to unpickling arbitrary objects, which could run code.
    """
    named = name or str(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, struct.error ...
        raise ValueError(
            f"{named} is not a weights-only checkpoint sslflow can read "
            f"({type(exc).__name__}); "
            "sslflow loads only tensors and plain values, never pickled objects that can run "
            "code: use a file written by sslflow.models.save_backbone or sslflow pretrain"
        ) from exc
    if not isinstance(payload, dict):  # a ValueError like every bad checkpoint, for callers
        raise ValueError(  # noqa: TRY004
            f"{named} holds a {type(payload).__name__}, not an sslflow backbone checkpoint"
        )
    return payload


def _load_logged(uri: str, tracking_uri: str | None) -> FrozenBackbone:
    from sslflow.tracking import registry

    if METADATA_KEY not in registry.model_metadata(uri, tracking_uri):
        raise ValueError(
            f"MLflow model {uri!r} was not logged by sslflow (no {METADATA_KEY!r} metadata)"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = registry.download_model_file(uri, CHECKPOINT_FILE, tracking_uri, folder)
        payload = _read_checkpoint(path, f"{CHECKPOINT_FILE} of {uri}")
    return backbone_from_checkpoint(payload, uri)


def log_backbone(
    backbone: FrozenBackbone,
    run_id: str,
    tracking_uri: str,
    registered_name: str | None = None,
    alias: str | None = "current",
) -> LoggedModelRef:
    """Log ``backbone`` as an MLflow model of run ``run_id``, registered as ``registered_name``
    with ``alias`` moved to the new version (see :func:`sslflow.tracking.registry.log_torch_model`).

    The model folder holds the module (MLflow's ``pytorch`` flavour, for MLflow's own tools:
    a pickle), the config as ``sslflow_backbone`` metadata and the checkpoint
    :func:`load_backbone` reads with ``weights_only=True``; the registered version's
    description says so (``LOADING_NOTE``).
    """
    import timm

    from sslflow.tracking import registry

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_backbone(backbone, Path(folder) / CHECKPOINT_FILE)
        device = backbone._device
        try:
            return registry.log_torch_model(
                backbone.module.cpu(),
                run_id,
                tracking_uri,
                metadata={METADATA_KEY: backbone.config()},
                files=[checkpoint],
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"timm=={timm.__version__}",
                ],
                registered_name=registered_name,
                alias=alias,
                description=LOADING_NOTE,
            )
        finally:
            backbone.to(device)
