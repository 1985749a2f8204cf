"""Read shard sets: exactly once (embedding, evaluation) or resampled forever (training).

Built on webdataset's tar iterator. Splitting across DDP ranks and DataLoader workers is done
here rather than with webdataset's splitters, because exactly-once must also hold when there
are fewer shards than ranks × workers (webdataset then raises or hands a worker nothing).
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from sslflow.data.batches import Chunk, shuffled_batches
from sslflow.data.blocks import BlockError, is_block, read_block
from sslflow.data.decoding import block_tensor, decode_image, decode_image_array, decode_tensor
from sslflow.data.geometry import AUTO, ImageGeometry
from sslflow.data.keys import KeyLedger
from sslflow.data.manifest import Manifest, resolve_urls
from sslflow.data.tar import iter_samples, open_url
from sslflow.data.urls import UrlRefused, check_url

log = logging.getLogger(__name__)

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
NO_LABEL = -1


class Mode(str, Enum):
    """How a shard set is traversed."""

    FINITE = "finite"  # every sample exactly once across ranks and workers, shard order kept
    RESAMPLED = "resampled"  # shards drawn with replacement, fixed samples per epoch


class ShardReadError(RuntimeError):
    """A shard or sample could not be read; names the shard URL and the sample key."""


@dataclass
class ReadErrors:
    """What was skipped in this process (each DataLoader worker has its own): corrupt shards
    and bad samples under ``on_error="skip"``; duplicate keys and empty shards always."""

    corrupt_shards: int = 0
    bad_samples: int = 0
    duplicate_keys: int = 0
    empty_shards: int = 0


def _worker_slot(rank: int, world_size: int) -> tuple[int, int]:
    """This process's global slot and the number of slots (ranks × DataLoader workers)."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return rank * workers + worker, world_size * workers


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class ShardDataset(IterableDataset):
    """WebDataset shards as a PyTorch ``IterableDataset`` of ``{"key", "image", "label"}``.

    A key that comes again within a shard is skipped with a warning naming the shard and the
    key (the first sample wins), and an empty shard is warned about; both are counted in
    ``errors``.

    Args:
        shards: a ``Manifest``, a manifest path, or shard URLs (local paths, http(s)://, and
            ``pipe:`` commands with ``allow_pipe``; a string may hold several, brace patterns
            expand).
        mode: ``finite`` yields each sample exactly once across DataLoader workers and DDP
            ranks; ``resampled`` draws shards with replacement and yields ``samples_per_epoch``
            samples per epoch in total (split across ranks and workers).
        samples_per_epoch: required for ``resampled``; defaults to the manifest's total.
        seed: seeds shard choice and the shuffle buffer (with the epoch from ``set_epoch``).
        decode: ``tensor`` gives uint8 (C, H, W) tensors; ``pil`` gives PIL images (EXIF
            orientation applied either way); ``encoded`` gives the stored bytes, undecoded and
            untransformed, for :func:`sslflow.data.decoding.decode_batch` (block-layout samples
            come as tensors, decoded already).
        image_mode: PIL mode to convert to (``"L"``, ``"RGB"``); ``auto`` (default) is the
            one mode of the manifest's geometry (RGB if any image is colour), so a shard set of
            mixed modes batches; None keeps L and RGB per image and converts any other mode to
            RGB explicitly.
        transform: applied to the decoded image.
        on_error: ``raise`` (default) raises ``ShardReadError`` naming shard and key;
            ``skip`` skips the shard remainder or the sample, counts it and logs a warning.
        rank, world_size: override the DDP rank (defaults: torch.distributed, then RANK and
            WORLD_SIZE).
        allow_pipe: run ``pipe:`` URLs as shell commands; only for URLs the user wrote (see
            :mod:`sslflow.data.urls`).
        shuffle_buffer: samples held for shuffling in resampled mode; at most the manifest's
            total, so a small set of large photos is not decoded several times over before
            the first sample comes out.
        batch_size: resampled mode only: yield ``{"image": uint8 (B, C, H, W), "label": (B,)}``
            batches (no keys) cut from whole blocks, ``samples_per_epoch // slots // B`` per
            DataLoader worker (use ``DataLoader(batch_size=None)``); ``transform`` then gets
            whole blocks (B, C, H, W) and must crop them to one shape, as CenterCropResize does.
    """

    def __init__(
        self,
        shards: Manifest | str | os.PathLike[str] | Sequence[str],
        mode: Mode | str = Mode.FINITE,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        decode: str = "tensor",
        image_mode: str | None = AUTO,
        transform: Callable[[Any], Any] | None = None,
        on_error: str = "raise",
        rank: int | None = None,
        world_size: int | None = None,
        allow_pipe: bool = False,
        shuffle_buffer: int = 1000,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.allow_pipe = allow_pipe
        self.urls, self.manifest = _resolve(shards, allow_pipe)
        if not self.urls:
            raise ValueError("ShardDataset needs at least one shard URL")
        self.mode = Mode(mode)
        if self.mode is Mode.RESAMPLED:
            if not samples_per_epoch and self.manifest is not None:
                samples_per_epoch = self.manifest.total_samples
            if not samples_per_epoch:
                raise ValueError("resampled mode needs samples_per_epoch (no manifest to count)")
        if decode not in ("tensor", "pil", "encoded"):
            raise ValueError(f"decode must be 'tensor', 'pil' or 'encoded', got {decode!r}")
        if batch_size is not None and (self.mode is not Mode.RESAMPLED or decode != "tensor"):
            raise ValueError("batch_size needs mode='resampled' and decode='tensor'")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 0
        self.decode = decode
        if image_mode == AUTO:
            geometry = self.manifest.geometry if self.manifest else None
            image_mode = geometry.mode if geometry else None
        if image_mode not in (None, "L", "RGB"):
            raise ValueError(f"image_mode must be 'auto', 'L', 'RGB' or None, got {image_mode!r}")
        self.image_mode = image_mode
        self.transform = transform
        self.on_error = on_error
        self.rank = rank
        self.world_size = world_size
        total = self.manifest.total_samples if self.manifest else shuffle_buffer
        self.shuffle_buffer = max(1, min(shuffle_buffer, total))
        self.errors = ReadErrors()
        self.batch_size = batch_size

    def __len__(self) -> int:
        """Samples per epoch over all ranks (finite: the manifest's total)."""
        if self.mode is Mode.RESAMPLED:
            return int(self.samples_per_epoch or 0)
        if self.manifest is None:
            raise TypeError("length of a finite URL list is unknown without a manifest")
        return self.manifest.total_samples

    def set_epoch(self, epoch: int) -> None:
        """Change the resampling seed per epoch (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dist_rank, dist_world = _dist_rank_world()
        rank = dist_rank if self.rank is None else self.rank
        world = dist_world if self.world_size is None else self.world_size
        slot, slots = _worker_slot(rank, world)
        if self.mode is Mode.FINITE:
            return self._finite(slot, slots)
        if self.batch_size:
            return self._batches(slot, slots)
        return self._resampled(slot, slots)

    def _finite(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        if len(self.urls) >= slots:
            for url in self.urls[slot::slots]:
                yield from self._samples(url)
            return
        position = 0  # fewer shards than slots: split by sample instead, still exactly once
        for url in self.urls:
            for sample in self._samples(url, raw=True):
                if position % slots == slot:
                    decoded = self._decode(sample) if "__key__" in sample else sample
                    if decoded is not None:
                        yield decoded
                position += 1

    def _slot_stream(self, slot: int, slots: int) -> tuple[int, random.Random]:
        """This slot's share of the epoch's samples and its seeded random stream."""
        total = int(self.samples_per_epoch or 0)
        quota = total // slots + (1 if slot < total % slots else 0)
        return quota, random.Random(f"{self.seed}-{self.epoch}-{slot}")

    def _drawn(self, rng: random.Random) -> Iterator[Any]:
        """Items of shards drawn with replacement, forever (100 empty shards in a row raise)."""
        empty_draws = 0
        while True:
            drawn = False
            for item in self._samples(rng.choice(self.urls)):
                drawn = True
                yield item
            empty_draws = 0 if drawn else empty_draws + 1
            if empty_draws >= 100:
                raise ShardReadError(f"100 shards in a row gave no sample among {self.urls[:3]}...")

    def _resampled(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        quota, rng = self._slot_stream(slot, slots)
        buffer: list[dict[str, Any]] = []
        yielded = 0
        for sample in self._drawn(rng):
            if yielded >= quota:
                return
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            index = rng.randrange(len(buffer))
            buffer[index], sample = sample, buffer[index]
            yield sample
            yielded += 1

    def _batches(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        """``quota // batch_size`` batches cut from whole chunks (see ``sslflow.data.batches``)."""
        quota, rng = self._slot_stream(slot, slots)
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        chunks = (
            item
            if isinstance(item, Chunk)
            else Chunk(item["image"].unsqueeze(0), torch.tensor([item["label"]]))
            for item in self._drawn(rng)
        )
        size = int(self.batch_size or 0)
        return shuffled_batches(chunks, quota // size, size, self.shuffle_buffer, generator)

    def _samples(self, url: str, raw: bool = False) -> Iterator[dict[str, Any]]:
        """Samples of one shard; a read error raises or skips the shard's remainder.

        ``raw`` leaves per-sample members undecoded (a block's samples come decoded anyway)."""
        last_key = None
        ledger = KeyLedger()
        try:
            with open_url(url, self.allow_pipe) as stream:
                for sample in iter_samples(stream, url):
                    last_key = sample["__key__"]
                    if is_block(sample):
                        yield from self._block_samples(sample, ledger)
                    elif not ledger.first(last_key):
                        self._duplicate(last_key, url)
                    elif raw:
                        yield sample
                    elif (decoded := self._decode(sample)) is not None:
                        yield decoded
        except (ShardReadError, UrlRefused):
            raise
        except Exception as exc:  # noqa: BLE001 - raised or skipped by on_error
            message = f"corrupt or unreadable shard {url} (after sample {last_key!r}): {exc}"
            self._skip_or_raise(message, exc, shard=True)
            return
        if last_key is None:
            self.errors.empty_shards += 1
            log.warning("shard %s holds no samples", url)

    def _duplicate(self, key: str, url: str) -> None:
        """Count and warn about a sample skipped because its key came before in the shard."""
        self.errors.duplicate_keys += 1
        log.warning("skipping duplicate key %r in shard %s (the first sample wins)", key, url)

    def _skip_or_raise(self, message: str, exc: Exception, shard: bool) -> None:
        """``on_error="raise"``: a ShardReadError with ``message``; ``skip``: count and warn."""
        if self.on_error == "raise":
            raise ShardReadError(message + "; pass on_error='skip' to skip it") from exc
        if shard:
            self.errors.corrupt_shards += 1
        else:
            self.errors.bad_samples += 1
        log.warning("skipping %s%s", "rest of shard: " if shard else "", message)

    def _block_samples(self, record: dict[str, Any], ledger: KeyLedger) -> Iterator[Any]:
        """The samples of a block member, as views of its pixels (no per-image decoding); in
        batched mode one ``Chunk`` of them, the transform applied to the whole block."""
        try:
            block = read_block(record)
        except BlockError as exc:
            self._skip_or_raise(f"{exc} in shard {record.get('__url__')}", exc, shard=False)
            return
        firsts = ledger.firsts(block.keys)
        if firsts is not None:
            for key, first in zip(block.keys, firsts, strict=True):
                if not first:
                    self._duplicate(key, record["__url__"])
            block = block.rows([i for i, first in enumerate(firsts) if first])
        if self.batch_size:
            pixels = block_tensor(block.pixels, self.image_mode)
            transformed = pixels if self.transform is None else self.transform(pixels)
            yield Chunk(transformed, torch.tensor(block.labels))
            return
        if self.decode == "pil":
            images: Sequence[Any] | torch.Tensor = [
                decode_image_array(pixels, self.image_mode) for pixels in block.pixels
            ]
        else:
            images = block_tensor(block.pixels, self.image_mode)
        transform = self.transform
        for key, image, label in zip(block.keys, images, block.labels, strict=True):
            yield {
                "key": key,
                "image": image if transform is None else transform(image),
                "label": label,
            }

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        key, url = sample.get("__key__"), sample.get("__url__")
        try:
            ext = next((k for k in IMAGE_KEYS if k in sample), None)
            if ext is None:
                raise ValueError(f"no image member ({', '.join(IMAGE_KEYS)})")
            label = int(sample["cls"]) if "cls" in sample else NO_LABEL
            if self.decode == "encoded":
                return {"key": key, "image": bytes(sample[ext]), "label": label}
            image: torch.Tensor | Image.Image = (
                decode_tensor(sample[ext], self.image_mode)
                if self.decode == "tensor"
                else decode_image(sample[ext], self.image_mode)
            )
        except Exception as exc:  # noqa: BLE001 - raised or skipped by on_error
            message = f"cannot decode sample {key!r} in shard {url}: {type(exc).__name__}: {exc}"
            self._skip_or_raise(message, exc, shard=False)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return {"key": key, "image": image, "label": label}


def geometry_of(manifest: Manifest, limit: int = 1000) -> ImageGeometry:
    """The manifest's recorded geometry; for shard sets written without one, measured on the
    first ``limit`` samples (image headers only) with a warning that it is an estimate."""
    if manifest.geometry is not None:
        return manifest.geometry
    measured = ImageGeometry()
    for url in manifest.urls():
        with open_url(url) as stream:
            for sample in iter_samples(stream, url):
                ext = next((k for k in IMAGE_KEYS if k in sample), None)
                if ext is not None:
                    with Image.open(io.BytesIO(sample[ext])) as image:
                        measured.add(image.mode, *image.size)
                if measured.samples >= limit:
                    break
        if measured.samples >= limit:
            break
    if not measured.samples:
        raise ShardReadError(f"no readable image in the shards of {manifest.root}")
    log.warning(
        "the manifest at %s records no image geometry (written by another tool or an older "
        "sslflow); "
        "estimated from %d samples: %s",
        manifest.root,
        measured.samples,
        measured.describe(),
    )
    return measured


def _resolve(
    shards: Manifest | str | os.PathLike[str] | Sequence[str], allow_pipe: bool
) -> tuple[list[str], Manifest | None]:
    """Shard URLs and, when there is one, the manifest (for counts and classes)."""
    if isinstance(shards, Manifest):
        return shards.urls(), shards
    if isinstance(shards, (str, os.PathLike)):
        return resolve_urls(str(shards), allow_pipe)
    return [check_url(str(u), allow_pipe) for u in shards], None
