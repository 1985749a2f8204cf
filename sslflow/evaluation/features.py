"""Frozen features of labelled shard sets, cached on disk as memmaps.

Features are extracted once per (model, split) and fed to every probe (as in DINOv2's
``extract_features``). The cache lives in ``<root>/<fingerprint[:16]>/<split>/``:

* ``features.npy``: (N, D) float32, opened as a read-only memmap;
* ``labels.npy``: (N,) int64 class indices;
* ``keys.json``: the N sample keys, in the same order;
* ``meta.json``: fingerprint, feature dimension, sample count, the shard set's content hash
  and class names.

A cache is reused only when all of these match the model and the shards; otherwise it is
recomputed into a temporary folder and swapped in whole, never mixed with the old one.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sslflow.data import Manifest, ShardDataset
from sslflow.data.geometry import PIXELS_SIDE_CAP
from sslflow.models import CenterCropResize, Embedder

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
RAW_PIXELS = "raw-pixels"


@dataclass(frozen=True)
class RawPixels:
    """The raw-pixel baseline: each image resized and centre-cropped to ``size``², flattened.

    ``size`` is bounded (:data:`~sslflow.data.geometry.PIXELS_SIDE_CAP`, 32 px by default from
    the data) so the baseline of a photo set stays small: 60k RGB images at 32² are 737 MB of
    float32 features, at full 224² they would be 36 GB. Fashion-MNIST keeps its 28 px.
    """

    size: int

    @classmethod
    def for_images(cls, manifest: Manifest) -> RawPixels:
        """The baseline sized from the shard set's geometry (at most 32 px)."""
        geometry = manifest.geometry
        return cls(geometry.image_size(PIXELS_SIDE_CAP) if geometry else PIXELS_SIDE_CAP)

    @property
    def transform(self) -> CenterCropResize:
        return CenterCropResize(self.size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → float32 (B, C·size·size) in [0, 1]."""
        return self.transform(images).reshape(images.shape[0], -1).float().div_(255.0)

    def fingerprint(self) -> str:
        return f"{RAW_PIXELS}-v2-{self.size}"


class UnlabelledShardsError(ValueError):
    """Probing needs labels, and a shard set has none."""


@dataclass
class FeatureSet:
    """Features of one split, aligned row by row with labels and keys.

    Attributes:
        features: (N, D) float32 (a read-only memmap when loaded from the cache).
        labels: (N,) int64 class indices.
        keys: N sample keys.
        classes: class names (index → name) when the shards record them.
        fingerprint: the embedder's fingerprint.
        root: the cache folder holding these files.
    """

    features: np.ndarray
    labels: np.ndarray
    keys: list[str]
    classes: list[str] | None
    fingerprint: str
    root: Path

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])


def require_labels(manifest: Manifest, split: str) -> None:
    """Raise ``UnlabelledShardsError`` naming the shards when ``manifest`` has no labels."""
    if manifest.labelled:
        return
    names = ", ".join(s.name for s in manifest.shards[:5]) + (
        " …" if len(manifest.shards) > 5 else ""
    )
    raise UnlabelledShardsError(
        f"the {split} shards at {manifest.root} ({names}) carry no labels, so they cannot be "
        "probed; write them from a labelled source (e.g. fashion-mnist, or an image folder "
        "with one sub-folder per class)"
    )


def cache_dir(root: Path, fingerprint: str, split: str) -> Path:
    """``<root>/<fingerprint[:16]>/<split>``: where one split's features of one model live."""
    return Path(root) / fingerprint[:16] / split


def load_cached(
    folder: Path, fingerprint: str, manifest: Manifest, dim: int | None = None
) -> FeatureSet | None:
    """The cached features in ``folder`` if they belong to this model and these shards, else None.

    Args:
        folder: a split folder written by :func:`extract_features`.
        fingerprint: the model's full fingerprint.
        manifest: the shard set the features must come from (compared by content hash).
        dim: the feature width the model produces, when known before embedding.
    """
    meta_path = folder / "meta.json"
    if not meta_path.is_file() or not (folder / "features.npy").is_file():
        return None
    meta = json.loads(meta_path.read_text())
    features = np.load(folder / "features.npy", mmap_mode="r")
    expected = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "content_hash": manifest.content_hash,
        "shape": [manifest.total_samples, dim if dim is not None else meta.get("feature_dim")],
    }
    found = {**{k: meta.get(k) for k in expected if k != "shape"}, "shape": list(features.shape)}
    if meta.get("feature_dim") != features.shape[1] or found != expected:
        stale = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
        log.warning(
            "feature cache %s does not match (found, expected): %s; recomputing", folder, stale
        )
        return None
    return _read(folder, features, meta)


def _read(folder: Path, features: np.ndarray, meta: dict) -> FeatureSet:
    return FeatureSet(
        features=features,
        labels=np.load(folder / "labels.npy"),
        keys=json.loads((folder / "keys.json").read_text()),
        classes=meta.get("classes"),
        fingerprint=meta["fingerprint"],
        root=folder,
    )


def load_feature_set(folder: str | Path) -> FeatureSet:
    """Open a cache folder written by :func:`extract_features` (no validation against shards)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no cached features at {folder} (written by extract_features)")
    return _read(
        folder, np.load(folder / "features.npy", mmap_mode="r"), json.loads(meta_path.read_text())
    )


def output_dim(embedder: Embedder, manifest: Manifest) -> int:
    """Feature width D of ``embedder`` on this shard set, from one embedded sample."""
    first = next(
        iter(ShardDataset(manifest, mode="finite", decode="tensor", transform=embedder.transform)),
        None,
    )
    if first is None:
        raise ValueError(f"the shard set at {manifest.root} holds no samples")
    return int(embedder.embed(first["image"][None]).shape[1])


def _batches(
    manifest: Manifest,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    num_workers: int,
) -> Iterator[dict]:
    dataset = ShardDataset(
        manifest, mode="finite", decode="tensor", transform=transform, on_error="raise"
    )
    workers = min(num_workers, len(manifest.shards))
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, persistent_workers=False
    )
    yield from loader


def extract_features(
    embedder: Embedder,
    manifest: Manifest,
    root: str | Path,
    split: str,
    batch_size: int = 256,
    num_workers: int = 0,
    dim: int | None = None,
) -> FeatureSet:
    """Embed every sample of a labelled shard set exactly once, or reuse a matching cache.

    Args:
        embedder: maps uint8 (B, C, H, W) batches to float32 (B, D).
        manifest: the labelled shard set (e.g. ``eval_split/train``).
        root: cache root; features go to ``cache_dir(root, fingerprint, split)``.
        split: ``train`` or ``test`` (part of the cache path).
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding shards (capped at the number of shards).
        dim: the width the model declares (``FrozenBackbone.feature_dim``); checked against
            what it outputs. The cache is reused only at the output width.

    Raises:
        UnlabelledShardsError: the shard set has no labels (the message names the shards).
        ValueError: a sample without a label, or the model's width differs from ``dim``.
    """
    require_labels(manifest, split)
    width = output_dim(embedder, manifest)
    if dim is not None and width != dim:
        raise ValueError(f"the model gives {width}-d features, expected {dim}")
    fingerprint = embedder.fingerprint()
    folder = cache_dir(Path(root), fingerprint, split)
    cached = load_cached(folder, fingerprint, manifest, width)
    if cached is not None:
        log.info("reusing cached %s features at %s", split, folder)
        return cached
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir(parents=True)
    try:
        _write(embedder, manifest, partial, split, fingerprint, batch_size, num_workers)
        _swap_in(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return load_feature_set(folder)


def _write(
    embedder: Embedder,
    manifest: Manifest,
    folder: Path,
    split: str,
    fingerprint: str,
    batch_size: int,
    num_workers: int,
) -> None:
    total = manifest.total_samples
    features: np.memmap | None = None
    labels = np.empty(total, dtype=np.int64)
    keys: list[str] = []
    with tqdm(total=total, desc=f"features {split}", unit="img") as progress:
        for batch in _batches(manifest, embedder.transform, batch_size, num_workers):
            out = embedder.embed(batch["image"]).numpy()
            if features is None:
                features = np.lib.format.open_memmap(
                    folder / "features.npy",
                    mode="w+",
                    dtype=np.float32,
                    shape=(total, out.shape[1]),
                )
            start = len(keys)
            if start + len(out) > total:
                raise ValueError(
                    f"the {split} shards hold more samples than their manifest's {total}"
                )
            batch_labels = batch["label"].numpy()
            if (batch_labels < 0).any():
                missing = [k for k, y in zip(batch["key"], batch_labels) if y < 0][:5]
                raise UnlabelledShardsError(
                    f"{split} samples without a label (e.g. {missing}) in {manifest.root}"
                )
            features[start : start + len(out)] = out
            labels[start : start + len(out)] = batch_labels
            keys.extend(batch["key"])
            progress.update(len(out))
    if features is None or len(keys) != total:
        raise ValueError(
            f"read {len(keys)} {split} samples from {manifest.root}, its manifest says {total}"
        )
    features.flush()
    np.save(folder / "labels.npy", labels)
    (folder / "keys.json").write_text(json.dumps(keys))
    meta = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "feature_dim": int(features.shape[1]),
        "samples": total,
        "content_hash": manifest.content_hash,
        "classes": manifest.classes,
        "split": split,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def _swap_in(partial: Path, folder: Path) -> None:
    """Replace ``folder`` by ``partial``; a reader sees the old set or the new one, never a mix."""
    if folder.exists():
        stale = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.stale")
        folder.rename(stale)
        partial.rename(folder)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        partial.rename(folder)
