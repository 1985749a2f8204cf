"""Block members: many small decoded images in one tar member, read without decoding each.

In the per-sample layout every image is its own PNG member (with ``.cls`` and ``.json``), so
reading one costs three tar headers and a PNG decode (~80–100 µs of worker time for 28 px, a
loader at 0.14–0.17× of an in-memory tensor). Small images that arrive as pixels
(Fashion-MNIST, CIFAR, digits) are instead written in blocks of up to ``BLOCK_SIZE`` images
of one shape and mode, as two members of one WebDataset sample:

- ``block-NNNNNN.pixels.npy``: uint8 (B, H, W) for L or (B, H, W, 3) for RGB, ``.npy`` format
  (read with ``allow_pickle=False``: a shard cannot run code);
- ``block-NNNNNN.samples.json``: ``{"keys": [...], "labels": [...]}`` (label null when
  unlabelled);
- ``block-NNNNNN.meta.json``: each image's metadata (source, index, size), a list parsed only
  when a shard set is written again from these shards (reading for training skips it).

A reader parses two headers and one array per block and hands out views of it. Files that
arrive encoded (JPEG/PNG folders, other shard sets) keep the per-sample layout, which every
WebDataset tool reads; one shard set may mix both.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from sslflow.data.encoding import KEPT_MODES
from sslflow.data.geometry import unified_mode
from sslflow.data.samples import Sample

PIXELS_FIELD = "pixels.npy"
SAMPLES_FIELD = "samples.json"
META_FIELD = "meta.json"
BLOCK_SIZE = 512  # images per block: header and .npy parsing cost < 0.1 µs per image
BLOCK_MAX_SIDE = 64  # layout auto: decoded images up to this side go into blocks
LAYOUTS = ("auto", "samples", "blocks")


class BlockError(ValueError):
    """A block member that is not what sslflow writes (wrong dtype, shape or sample list)."""


def block_pixels(image: Any, layout: str, max_side: int) -> np.ndarray | None:
    """The uint8 pixels to store in a block, or None when the image gets its own member.

    ``auto`` blocks decoded images (not encoded files, whose bytes are kept) whose longer side
    is at most ``BLOCK_MAX_SIDE``; ``blocks`` blocks every decoded image; ``samples`` none.
    An image that ``max_side`` would downscale is never blocked.
    """
    if layout == "samples" or not isinstance(image, Image.Image):
        return None
    side = max(image.size)
    if (layout == "auto" and side > BLOCK_MAX_SIDE) or (max_side and side > max_side):
        return None
    mode = image.mode if image.mode in KEPT_MODES else unified_mode(image.mode)
    return np.asarray(image.convert(mode) if image.mode != mode else image, dtype=np.uint8)


@dataclass
class PendingBlock:
    """Images of one shape gathered for the next block member."""

    pixels: list[np.ndarray] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    json_bytes: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def fits(self, pixels: np.ndarray) -> bool:
        return not self.pixels or self.pixels[0].shape == pixels.shape

    def add(self, sample: Sample, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        self.pixels.append(pixels)
        self.keys.append(sample.key)
        self.labels.append(sample.label)
        self.meta.append({**sample.meta, "width": width, "height": height})
        self.json_bytes += len(json.dumps([sample.key, sample.label, self.meta[-1]])) + 2

    @property
    def nbytes(self) -> int:
        """Tar bytes the block's members will take (for max_bytes): pixels, JSON, and the
        three headers, the ``.npy`` header and padding (at most 7 blocks of 512)."""
        if not self.pixels:
            return 0
        return len(self) * self.pixels[0].nbytes + self.json_bytes + 7 * 512

    def members(self, number: int) -> dict[str, Any]:
        """The block as a WebDataset record: ``__key__`` and its two members."""
        buffer = io.BytesIO()
        np.save(buffer, np.stack(self.pixels), allow_pickle=False)
        body = {"keys": self.keys, "labels": self.labels}
        return {
            "__key__": f"block-{number:06d}",
            PIXELS_FIELD: buffer.getvalue(),
            SAMPLES_FIELD: json.dumps(body).encode(),
            META_FIELD: json.dumps(self.meta).encode(),
        }


def block_bytes(sample: Sample, pixels: np.ndarray) -> int:
    """Bytes one more image adds to a block (pixels and its JSON entry)."""
    return pixels.nbytes + len(json.dumps([sample.key, sample.label, sample.meta])) + 40


@dataclass(frozen=True)
class Block:
    """A block read back: uint8 (B, H, W) or (B, H, W, 3) pixels with their keys and labels
    (-1 when unlabelled); ``meta()`` parses the images' metadata."""

    pixels: np.ndarray
    keys: list[str]
    labels: list[int]
    meta_json: bytes = b""

    def meta(self) -> list[dict[str, Any]]:
        parsed = json.loads(self.meta_json) if self.meta_json else None
        return parsed if isinstance(parsed, list) else [{} for _ in self.keys]

    def rows(self, kept: Sequence[int]) -> Block:
        """The block with only the images at ``kept`` (e.g. without duplicate keys)."""
        metas = self.meta()
        return Block(
            self.pixels[list(kept)],
            [self.keys[i] for i in kept],
            [self.labels[i] for i in kept],
            json.dumps([metas[i] for i in kept]).encode(),
        )


def is_block(record: dict[str, Any]) -> bool:
    return PIXELS_FIELD in record


def read_block(record: dict[str, Any]) -> Block:
    """Parse a block record from ``sslflow.data.tar.iter_samples``.

    Raises:
        BlockError: the members are missing, not uint8 images, or disagree in length.
    """
    if SAMPLES_FIELD not in record:
        raise BlockError(f"block {record.get('__key__')!r} has no {SAMPLES_FIELD} member")
    try:
        pixels = np.load(io.BytesIO(record[PIXELS_FIELD]), allow_pickle=False)
        body = json.loads(record[SAMPLES_FIELD])
    except (ValueError, OSError) as exc:
        raise BlockError(f"block {record.get('__key__')!r} is unreadable: {exc}") from exc
    keys = body.get("keys") if isinstance(body, dict) else None
    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (3, 4)
        or (pixels.ndim == 4 and pixels.shape[3] != 3)
    ):
        raise BlockError(
            f"block {record.get('__key__')!r}: expected uint8 (B, H, W[, 3]) pixels, got "
            f"{pixels.dtype} {pixels.shape}"
        )
    if not isinstance(keys, list) or len(keys) != len(pixels):
        raise BlockError(
            f"block {record.get('__key__')!r}: {len(pixels)} images but keys "
            f"{len(keys) if isinstance(keys, list) else 'missing'}"
        )
    given = body.get("labels") or [None] * len(keys)
    labels = [-1 if label is None else int(label) for label in given]
    return Block(pixels, keys, labels, record.get(META_FIELD, b""))
