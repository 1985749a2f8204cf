"""Which backbone a model spec names: a checkpoint, an MLflow model URI or a random init.

Also what its pretraining run recorded, for the report's summary, and the randomly
initialised copy probed as a baseline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sslflow.data.geometry import ImageGeometry
from sslflow.devices import compute_device
from sslflow.models import FrozenBackbone, load_backbone, random_backbone

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"


@dataclass
class ResolvedModel:
    """The backbone to probe and how it was named."""

    backbone: FrozenBackbone
    spec: str


def resolve_model(
    spec: str,
    tracking_uri: str | None = None,
    fallback_backbone: str = "resnet10t",
    small_stem: bool = False,
    images: ImageGeometry | None = None,
) -> ResolvedModel:
    """Turn a model spec into a frozen backbone.

    Args:
        spec: a checkpoint path or MLflow model URI (``models:/sslflow-<method>@<alias>``,
            ``runs:/<id>/model``); ``random:<timm name>`` for a randomly initialised backbone;
            empty for the newest registered ``sslflow-*`` model, else a random
            ``fallback_backbone``.
        tracking_uri: MLflow tracking/registry URI for model URIs.
        fallback_backbone: timm name used when ``spec`` is empty and nothing is registered.
        small_stem: ResNet stem of random backbones (3×3 stride 1 for 28-32 px images).
        images: geometry of the images to probe; a random backbone takes its channels and
            input size from it (default: 1 channel, 28 px).

    Raises:
        ValueError: an unresolvable model URI (the message lists the registry's models and
            aliases) or an unknown backbone name.
        FileNotFoundError: a path that does not exist.
    """
    from sslflow.tracking.registry import (  # lazy: mlflow is slow
        latest_registered_model,
        pin_model_uri,
    )

    if not spec:
        latest = latest_registered_model(tracking_uri)
        if latest is None:
            log.warning(
                "no sslflow model is registered; probing a randomly initialised %s",
                fallback_backbone,
            )
            spec = RANDOM_PREFIX + fallback_backbone
        else:
            spec = latest
    if spec.startswith(RANDOM_PREFIX):
        in_chans, size = (images.channels, images.image_size()) if images else (1, 28)
        random = random_backbone(spec[len(RANDOM_PREFIX) :], in_chans, size, small_stem=small_stem)
        return ResolvedModel(random.to(compute_device()), spec)
    pinned = pin_model_uri(spec, tracking_uri)  # reports name the version, not a moving alias
    loaded = load_backbone(pinned, tracking_uri=tracking_uri)
    return ResolvedModel(loaded.to(compute_device()), pinned)


def training_summary(spec: str, tracking_uri: str | None) -> dict[str, str]:
    """Training run, method, backbone, image size, channels, epochs and curation of a model URI's
    pretraining run.

    Empty for checkpoint files and random backbones (nothing recorded to read).
    """
    from sslflow.tracking import client  # lazy: mlflow is slow to import
    from sslflow.tracking.registry import training_run_id

    run_id = training_run_id(spec, tracking_uri)
    if run_id is None:
        return {}
    run = client(tracking_uri).get_run(run_id)
    params, tags = run.data.params, run.data.tags
    trained_on = tags.get("sslflow.trained_on", "")
    found = {
        "training run": run_id,
        "method": params.get("method"),
        "backbone": params.get("backbone"),
        "image size": f"{tags['sslflow.image_size']} px" if "sslflow.image_size" in tags else None,
        "channels": tags.get("sslflow.in_chans"),
        "epochs": params.get("epochs"),
        "curation": {"curated_shards": "curated shards", "raw_shards": "none (raw shards)"}.get(
            trained_on, trained_on
        ),
    }
    return {key: value for key, value in found.items() if value}


def random_copy(backbone: FrozenBackbone, seed: int = 0) -> FrozenBackbone:
    """A randomly initialised backbone of the same architecture and input format."""
    return random_backbone(
        backbone.name,
        backbone.in_chans,
        backbone.image_size,
        seed=seed,
        small_stem=backbone.small_stem,
    )
