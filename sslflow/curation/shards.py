"""Reading selected samples back from the pool's shards: the curated shard source, thumbnails."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from sslflow.data import Manifest
from sslflow.data.samples import EncodedImage, Sample, Skipped
from sslflow.data.sources import ShardSource


def pool_source(manifest: Manifest) -> ShardSource:
    """The pool's shards as a source whose samples keep their encoded bytes, keys and labels."""
    return ShardSource(
        urls=manifest.urls(), classes=manifest.classes, samples=manifest.total_samples
    )


@dataclass
class SelectedSource:
    """The samples of ``inner`` whose key is in ``keys``, in the pool's order.

    Encoded images pass through unchanged (no re-encoding), so keys, labels and metadata of the
    curated shards are those of the pool. Positions (for ``write_shards``'s resumption) count
    selected samples only.
    """

    inner: ShardSource
    keys: frozenset[str]
    name: str = "curated"
    classes: list[str] | None = field(init=False)

    def __post_init__(self) -> None:
        self.classes = self.inner.classes

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()
        return {
            "name": self.name,
            "pool": self.inner.describe(),
            "samples": len(self),
            "keys_sha256": digest,
        }

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        position = 0
        for item in self.inner.iter_items():
            if isinstance(item, Sample) and item.key in self.keys:
                if position >= start:
                    yield item
                position += 1


def read_images(manifest: Manifest, keys: set[str]) -> dict[str, np.ndarray]:
    """Decode the images of ``keys`` (uint8 (H, W) or (H, W, C)) in one pass over the shards."""
    found: dict[str, np.ndarray] = {}
    for item in pool_source(manifest).iter_items():
        if not isinstance(item, Sample) or item.key not in keys:
            continue
        if isinstance(item.image, EncodedImage):
            with Image.open(io.BytesIO(item.image.data)) as opened:
                found[item.key] = np.asarray(opened.convert("L" if opened.mode == "L" else "RGB"))
        else:  # a block's pixels
            found[item.key] = np.asarray(item.image)
        if len(found) == len(keys):
            break
    return found
