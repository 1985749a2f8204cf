"""Embeddings of a shard set: an N×D float16 ``.npy`` memmap plus keys and labels, resumable.

Output folder layout: ``embeddings.npy`` (N, D) float16, ``keys.txt`` (one key per row),
``labels.npy`` (N,) int64 (-1 = unlabelled; used only by the curation report),
``embedder.json`` (what produced the rows, with its fingerprint), ``progress.json`` (rows
done, updated after each chunk) and, for the ``pixels`` embedder, ``pca_mean.npy`` and
``pca_components.npy``. ``meta.json`` is written last and marks the folder complete.

Embedders (``EmbedConfig.embedder``):

* ``pixels``: grey/RGB pixels resized and centre-cropped to ``image_size``² (auto: at most
  32 px), scaled to [0, 1], projected by a PCA to ``dim`` fitted (scikit-learn, seeded
  randomised SVD) on ``pca_samples`` seeded images. The offline default: no weights needed.
* a timm model name: ``pretrained=True`` loads its weights (``weights``, else a local hub
  cache: :mod:`sslflow.models.hub_weights`); otherwise a seeded random initialisation.
* an sslflow checkpoint file or an MLflow model URI (``models:/…``, ``runs:/…``), as produced
  by sslflow's pretraining, so round t's model curates round t+1.

Every embedder satisfies :class:`sslflow.models.Embedder`; backbones are
:class:`sslflow.models.FrozenBackbone` themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sslflow.curation.embedding_set import PIXELS_EMBEDDER, EmbeddingSet
from sslflow.curation.storage import (
    load_json,
    load_lines,
    load_npy,
    save_json,
    save_lines,
    save_npy,
)
from sslflow.data import Manifest, ShardDataset, geometry_of
from sslflow.data.geometry import AUTO, BACKBONE_SIDE_CAP, PIXELS_SIDE_CAP, ImageGeometry
from sslflow.devices import compute_device
from sslflow.models import CenterCropResize, Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """How to embed a shard set.

    Geometry is ``auto`` by default and resolved from the shard set's manifest
    (:func:`resolve_geometry`); each image is resized and centre-cropped per sample before
    batching, so photos of any size embed within bounded memory.

    Attributes:
        embedder: ``pixels`` (resize + PCA, offline), a timm model name, an sslflow checkpoint
            path or an MLflow model URI (``models:/…``).
        dim: output width of the ``pixels`` embedder (PCA components).
        image_size: side images are resized and centre-cropped to (pixels and timm);
            0 = auto: the 5th percentile of the shorter side, at most 32 px for pixels and
            224 px for timm models (checkpoints carry their own).
        image_mode: ``L`` (grey), ``RGB``, or ``auto``: RGB when any image is colour.
        in_chans: input channels of a timm model; 0 = auto: 1 for grey sets, 3 for colour
            (checkpoints carry their own).
        pretrained: load a timm model's pretrained weights: ``weights``, else timm's default
            ones from a local hub cache, downloaded only when the hub answers.
        weights: a timm-format state dict file of the model (``.safetensors``/``.pth``).
        small_stem: timm ResNets get a 3×3 stride-1 stem without max-pool (small images).
        pca_samples: images the PCA is fitted on (seeded choice).
        batch_size: images per forward pass.
        chunk_size: rows between progress checkpoints (the unit of resumption).
        seed: seeds the PCA sample and random timm initialisations.
        tracking_uri: MLflow tracking URI for model URIs ("" = MLflow's default).
        progress: show a tqdm bar.
    """

    embedder: str = PIXELS_EMBEDDER
    dim: int = 64
    image_size: int = 0
    image_mode: str = AUTO
    in_chans: int = 0
    pretrained: bool = False
    weights: str = ""
    small_stem: bool = False
    pca_samples: int = 10_000
    batch_size: int = 256
    chunk_size: int = 4096
    seed: int = 0
    tracking_uri: str = ""
    progress: bool = True


def resolve_geometry(config: EmbedConfig, geometry: ImageGeometry) -> EmbedConfig:
    """``config`` with its ``auto`` image settings taken from the shard set's geometry."""
    cap = PIXELS_SIDE_CAP if config.embedder == PIXELS_EMBEDDER else BACKBONE_SIDE_CAP
    if config.image_mode not in (AUTO, "L", "RGB"):
        raise ValueError(f"image_mode must be auto, L or RGB, got {config.image_mode!r}")
    return replace(
        config,
        image_size=config.image_size or geometry.image_size(cap),
        image_mode=geometry.mode if config.image_mode == AUTO else config.image_mode,
        in_chans=config.in_chans or geometry.channels,
    )


@dataclass
class PixelsEmbedder:
    """Flattened resized pixels projected on PCA components: (B, C, H, W) → (B, components)."""

    image_size: int
    mean: np.ndarray
    components: np.ndarray

    @property
    def transform(self) -> CenterCropResize:
        return CenterCropResize(self.image_size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        # float64: a float32 GEMM may round differently with the memory alignment of the batch,
        # and a resumed run must give the same float16 rows as an uninterrupted one
        flat = _pixels(self.transform(images)).double()
        centred = flat - torch.from_numpy(self.mean).double()
        return (centred @ torch.from_numpy(self.components).double().T).float()

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"pixels-{self.image_size}".encode())
        digest.update(self.mean.tobytes())
        digest.update(self.components.tobytes())
        return digest.hexdigest()

    @classmethod
    def fit(cls, manifest: Manifest, config: EmbedConfig, out: Path) -> PixelsEmbedder:
        """Fit the PCA on a seeded sample of the shard set (or reload it from ``out``)."""
        mean_path, comp_path = out / "pca_mean.npy", out / "pca_components.npy"
        if mean_path.is_file() and comp_path.is_file():
            return cls(config.image_size, load_npy(mean_path), load_npy(comp_path))
        from sklearn.decomposition import PCA

        total = manifest.total_samples
        count = min(config.pca_samples, total)
        wanted = np.sort(
            np.random.default_rng(config.seed).choice(total, size=count, replace=False)
        )
        rows: list[np.ndarray] = []
        position = 0
        for batch in _batches(
            manifest, config, CenterCropResize(config.image_size), desc="PCA sample"
        ):
            flat = _pixels(batch["image"]).numpy()
            hit = wanted[(wanted >= position) & (wanted < position + len(flat))] - position
            rows.append(flat[hit])
            position += len(flat)
            if position > wanted[-1]:
                break
        sample = np.concatenate(rows)
        dim = min(config.dim, sample.shape[1], len(sample))
        if dim < config.dim:
            raise ValueError(
                f"pixels embedder: dim={config.dim} exceeds what {len(sample)} images of "
                f"{sample.shape[1]} pixels allow; use dim ≤ {dim}"
            )
        pca = PCA(n_components=dim, svd_solver="randomized", random_state=config.seed).fit(sample)
        mean = pca.mean_.astype(np.float32)
        components = pca.components_.astype(np.float32)
        save_npy(mean_path, mean)
        save_npy(comp_path, components)
        return cls(config.image_size, mean, components)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, S, S) → float32 (B, C·S·S) on [0, 1]."""
    return images.flatten(1).float().div_(255.0)


def make_embedder(config: EmbedConfig, manifest: Manifest, out: Path) -> Embedder:
    """Build the embedder named by ``config.embedder`` (see the module docstring)."""
    if config.embedder == PIXELS_EMBEDDER:
        return PixelsEmbedder.fit(manifest, config, out)
    from sslflow import models

    spec, size, chans = config.embedder, config.image_size, config.in_chans
    if _is_model_uri(spec) or Path(spec).expanduser().is_file():
        backbone = models.load_backbone(spec, config.tracking_uri or None)
    elif config.pretrained:
        weights: bool | str = config.weights or True
        backbone = models.timm_backbone(spec, weights, chans, size, config.small_stem)
    else:
        backbone = models.random_backbone(spec, chans, size, config.seed, config.small_stem)
    return backbone.to(compute_device())


def _is_model_uri(spec: str) -> bool:
    from sslflow.tracking.registry import is_model_uri  # lazy: mlflow takes seconds to import

    return is_model_uri(spec)


def feature_dim(embedder: Embedder, manifest: Manifest, config: EmbedConfig) -> int:
    """Width D of ``embedder``'s rows on this shard set, from its first sample."""
    quiet = replace(config, batch_size=1, progress=False)
    first = next(_batches(manifest, quiet, embedder.transform, desc="width"), None)
    if first is None:
        raise ValueError(f"the shard set at {manifest.root} holds no samples")
    return int(embedder.embed(first["image"]).shape[1])


def _batches(
    manifest: Manifest, config: EmbedConfig, transform: CenterCropResize, desc: str, skip: int = 0
) -> Iterator[dict[str, Any]]:
    """Finite pass (each sample once, manifest order) in batches, after ``skip`` samples.

    ``transform`` runs on each image as it is decoded, so only resized images are batched.
    """
    dataset = ShardDataset(
        manifest,
        mode="finite",
        image_mode=config.image_mode,
        transform=transform,
        rank=0,
        world_size=1,
    )
    bar = tqdm(
        total=manifest.total_samples,
        initial=skip,
        desc=desc,
        disable=not config.progress,
        unit="img",
    )
    batch: list[dict[str, Any]] = []
    for position, sample in enumerate(dataset):
        if position < skip:
            continue
        batch.append(sample)
        if len(batch) == config.batch_size:
            bar.update(len(batch))
            yield _collate(batch)
            batch = []
    if batch:
        bar.update(len(batch))
        yield _collate(batch)
    bar.close()


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the (equal-size, already transformed) images with their keys and labels."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "key": [s["key"] for s in samples],
        "label": np.array([s["label"] for s in samples], dtype=np.int64),
    }


def embed_shards(
    shards: Manifest | str | Path, out_dir: str | Path, config: EmbedConfig
) -> EmbeddingSet:
    """Embed every sample of a shard set once, in manifest order; resumes an interrupted run.

    Args:
        shards: a ``Manifest`` or a manifest path/folder.
        out_dir: output folder (see the module docstring).
        config: the embedder and its options.

    Returns:
        The complete ``EmbeddingSet``. An existing folder made with another config, another
        shard set or another model version (an alias is pinned to the version it names now)
        is rebuilt from scratch.
    """
    manifest = shards if isinstance(shards, Manifest) else Manifest.load(shards)
    config = resolve_geometry(config, geometry_of(manifest))
    if config.embedder != PIXELS_EMBEDDER and _is_model_uri(config.embedder):
        from sslflow.tracking.registry import pin_model_uri  # the cache keys on the version

        config = replace(
            config, embedder=pin_model_uri(config.embedder, config.tracking_uri or None)
        )
    out = Path(out_dir)
    identity = {**asdict(config), "progress": None, "shards": manifest.content_hash}
    if (out / "meta.json").is_file() and load_json(out / "meta.json")["identity"] == identity:
        return EmbeddingSet(out)
    done = _resumable_rows(out, identity)
    out.mkdir(parents=True, exist_ok=True)
    embedder = make_embedder(config, manifest, out)
    dim = feature_dim(embedder, manifest, config)
    total = manifest.total_samples
    save_json(
        out / "embedder.json",
        {"identity": identity, "fingerprint": embedder.fingerprint(), "dim": dim},
    )
    mode = "r+" if done else "w+"
    array = np.lib.format.open_memmap(
        out / "embeddings.npy", mode=mode, dtype=np.float16, shape=(total, dim)
    )
    labels = np.lib.format.open_memmap(
        out / "labels.npy", mode=mode, dtype=np.int64, shape=(total,)
    )
    save_lines(out / "keys.txt", load_lines(out / "keys.txt")[:done] if done else [])
    keys: list[str] = []
    position = done
    for batch in _batches(
        manifest, config, embedder.transform, desc=f"embed ({config.embedder})", skip=done
    ):
        end = position + len(batch["key"])
        if end > total:
            raise ValueError(f"shard set yields more samples than its manifest's {total}")
        array[position:end] = embedder.embed(batch["image"]).numpy().astype(np.float16)
        labels[position:end] = batch["label"]
        keys.extend(batch["key"])
        position = end
        if len(keys) >= config.chunk_size:
            _checkpoint(out, array, labels, keys, position, identity)
            keys = []
    if position != total:
        raise ValueError(f"shard set yielded {position} samples but its manifest says {total}")
    _checkpoint(out, array, labels, keys, position, identity)
    del array, labels
    save_json(
        out / "meta.json",
        {
            "identity": identity,
            "fingerprint": embedder.fingerprint(),
            "rows": total,
            "dim": dim,
            "classes": manifest.classes,
        },
    )
    return EmbeddingSet(out)


def _resumable_rows(out: Path, identity: dict[str, Any]) -> int:
    """Rows already embedded by an interrupted run with the same identity (0 = start over)."""
    path = out / "progress.json"
    if not path.is_file():
        return 0
    progress = load_json(path)
    if progress.get("identity") != identity or not (out / "embeddings.npy").is_file():
        for name in ("progress.json", "meta.json", "pca_mean.npy", "pca_components.npy"):
            (out / name).unlink(missing_ok=True)
        return 0
    log.info("resuming embeddings at row %d", progress["rows"])
    return int(progress["rows"])


def _checkpoint(
    out: Path,
    array: np.memmap,
    labels: np.memmap,
    keys: list[str],
    rows: int,
    identity: dict[str, Any],
) -> None:
    """Flush the memmaps, append the chunk's keys, then record ``rows`` as done.

    The order makes a crash safe: a resumed run keeps only the first ``rows`` keys.
    """
    array.flush()
    labels.flush()
    with open(out / "keys.txt", "a", encoding="utf-8") as handle:
        handle.write("".join(k + "\n" for k in keys))
    (out / "progress.json.partial").write_text(json.dumps({"identity": identity, "rows": rows}))
    (out / "progress.json.partial").replace(out / "progress.json")
