"""Copy-detection fingerprints of a shard set: a content hash and a small grey thumbnail per image.

Duplicate removal (:mod:`sslflow.curation.dedup`) compares these, never the curation
embedding: an embedding made to group concepts also groups distinct images of one concept.

* ``digests.npy`` (N, 16) uint8: BLAKE2b-128 of the decoded pixels and their shape, so the same
  picture saved as PNG and as a re-compressed PNG is an exact duplicate.
* ``thumbs.npy`` (N, 32, 32) uint8: the grey image, downscaled (antialiased) to 32 × 32 when a
  side exceeds 32 px and kept at its own pixels otherwise (resampling a 28 px image would blur
  the pixel-exact match of a shifted copy), then moved by whole pixels so that its centre of
  mass sits at the centre. The centring undoes translations, so a 2 px shifted copy lands on
  its original (measured: docs/benchmarks/curation.md).
* ``small.npy`` (N,) bool: the image fits in 32 × 32 at its own pixels (its thumbnail is exact,
  so copies are compared pixel by pixel; larger images are aligned and correlated:
  :mod:`sslflow.curation.alignment`).
* ``keys.txt`` and ``meta.json`` (the shard set's content hash; written last).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from sslflow.curation.rows import Rows
from sslflow.curation.storage import (
    load_json,
    load_lines,
    load_npy,
    save_json,
    save_lines,
    save_npy,
)
from sslflow.data import Manifest, ShardDataset

THUMB_SIDE = 32
DIGEST_BYTES = 16
BACKGROUND_TOLERANCE = 8
"""Grey levels within which a pixel counts as background when centring (noise, JPEG ringing)."""


def background(thumbs: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The median of each thumbnail's border pixels: (..., S, S) → (...)."""
    t = torch.as_tensor(thumbs, dtype=torch.float32)
    border = torch.cat([t[..., 0, :], t[..., -1, :], t[..., :, 0], t[..., :, -1]], dim=-1)
    return border.median(dim=-1).values


def copy_thumbnail(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 → (32, 32) uint8: downscaled if larger; a small image is kept at its
    pixels and centred by its centre of mass (a photo's 2 px shift is sub-pixel at 32 px, and
    its centre of mass moves with content, not with translation)."""
    image = torch.from_numpy(np.ascontiguousarray(grey)).float()
    if not is_small(*image.shape):
        return (
            F.interpolate(
                image[None, None], (THUMB_SIDE, THUMB_SIDE), mode="bilinear", antialias=True
            )[0, 0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
            .numpy()
        )
    height, width = image.shape
    fill = float(background(image))
    weight = ((image - fill).abs() - BACKGROUND_TOLERANCE).clamp_(min=0)
    total = float(weight.sum())
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2  # a blank image stays where it is
    if total:
        centre_y = float((weight.sum(1) * torch.arange(height)).sum()) / total
        centre_x = float((weight.sum(0) * torch.arange(width)).sum()) / total
    side = THUMB_SIDE
    canvas = torch.full((3 * side, 3 * side), fill)
    top = side + round((side - 1) / 2 - centre_y)
    left = side + round((side - 1) / 2 - centre_x)
    canvas[top : top + height, left : left + width] = image
    return canvas[side : 2 * side, side : 2 * side].round().clamp(0, 255).to(torch.uint8).numpy()


def is_small(height: int, width: int) -> bool:
    """Whether an image of this size keeps its own pixels in its thumbnail."""
    return max(height, width) <= THUMB_SIDE


class CopyFingerprint:
    """ShardDataset transform: uint8 (C, H, W) → (thumbnail, digest, small). A class so it
    pickles."""

    def __call__(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
        pixels = image.numpy()
        digest = hashlib.blake2b(str(pixels.shape).encode(), digest_size=DIGEST_BYTES)
        digest.update(pixels.tobytes())
        if pixels.shape[0] == 3:
            grey = (pixels[0] * 0.299 + pixels[1] * 0.587 + pixels[2] * 0.114).round()
        else:
            grey = pixels[0]
        thumb = copy_thumbnail(grey.astype(np.uint8))
        return thumb, np.frombuffer(digest.digest(), np.uint8), is_small(*pixels.shape[1:])


@dataclass(frozen=True)
class CopyFeatures:
    """What copy detection compares, row-aligned: thumbnails (an array, a memmap, or a
    ``RowSubset`` of one, read a chunk at a time), digests, small-image flags."""

    thumbs: Rows
    digests: np.ndarray
    small: np.ndarray

    def __len__(self) -> int:
        return len(self.thumbs)

    @classmethod
    def of_images(cls, images: Iterable[torch.Tensor]) -> CopyFeatures:
        """Features of decoded uint8 (C, H, W) images, in memory (tests, benchmarks)."""
        fingerprint = CopyFingerprint()
        thumbs, digests, small = zip(*(fingerprint(image) for image in images), strict=True)
        return cls(np.stack(thumbs), np.stack(digests), np.array(small, dtype=bool))


@dataclass(frozen=True)
class Fingerprints:
    """A complete fingerprints folder (see the module docstring)."""

    root: Path

    def thumbs(self) -> np.ndarray:
        """(N, 32, 32) uint8 memmap."""
        return load_npy(self.root / "thumbs.npy", mmap=True)

    def digests(self) -> np.ndarray:
        """(N, 16) uint8."""
        return load_npy(self.root / "digests.npy")

    def keys(self) -> list[str]:
        return load_lines(self.root / "keys.txt")

    def features(self) -> CopyFeatures:
        return CopyFeatures(self.thumbs(), self.digests(), load_npy(self.root / "small.npy"))


def fingerprint_shards(manifest: Manifest, out_dir: Path, progress: bool = True) -> Fingerprints:
    """Fingerprint every sample of ``manifest`` once, in manifest order (the embeddings' order).

    A folder already made from the same shard content is reused; it does not depend on the
    embedder, so later curation rounds pay for this pass once.
    """
    out = Path(out_dir)
    identity = {"shards": manifest.content_hash, "side": THUMB_SIDE}
    meta = out / "meta.json"
    if meta.is_file() and load_json(meta).get("identity") == identity:
        return Fingerprints(out)
    out.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    total = manifest.total_samples
    thumbs = np.lib.format.open_memmap(
        out / "thumbs.npy", mode="w+", dtype=np.uint8, shape=(total, THUMB_SIDE, THUMB_SIDE)
    )
    digests = np.zeros((total, DIGEST_BYTES), np.uint8)
    small = np.zeros(total, bool)
    keys: list[str] = []
    dataset = ShardDataset(
        manifest, mode="finite", transform=CopyFingerprint(), rank=0, world_size=1
    )
    bar = tqdm(total=total, desc="copy fingerprints", unit="img", disable=not progress)
    for row, sample in enumerate(dataset):
        if row >= total:
            raise ValueError(f"shard set yields more samples than its manifest's {total}")
        thumbs[row], digests[row], small[row] = sample["image"]
        keys.append(sample["key"])
        bar.update()
    bar.close()
    if len(keys) != total:
        raise ValueError(f"shard set yielded {len(keys)} samples but its manifest says {total}")
    thumbs.flush()
    del thumbs
    save_npy(out / "digests.npy", digests)
    save_npy(out / "small.npy", small)
    save_lines(out / "keys.txt", keys)
    save_json(meta, {"identity": identity, "rows": total})
    return Fingerprints(out)
