"""Write a source into WebDataset tar shards, atomically and resumably.

Each shard is written as ``shard-NNNNNN.tar.partial`` and renamed once complete; a progress
journal records every completed shard with the source position it reached, so a rerun with
the same config resumes after the last complete shard. ``manifest.json`` appears last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.data.blocks import BLOCK_SIZE, LAYOUTS, PendingBlock, block_bytes, block_pixels
from sslflow.data.encoding import UNREADABLE, StoredImage, stored_image
from sslflow.data.geometry import ImageGeometry
from sslflow.data.journal import (
    append_journal,
    clear_own_files,
    foreign_files,
    remove_stale_shards,
    resume_state,
)
from sslflow.data.keys import contained_key
from sslflow.data.manifest import MANIFEST_NAME, Manifest, ShardInfo, sha256_file
from sslflow.data.samples import Sample, Skipped, Source
from sslflow.data.tar import end_archive, write_member

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-%06d.tar"
SHARD_FIELDS = {f.name for f in fields(ShardInfo)}


class ShardWriteError(RuntimeError):
    """The output folder cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class WriterConfig:
    """How samples are packed into shards (part of the shard set's fingerprint).

    Attributes:
        shard_size: samples per shard (≥ 2 shards per DataLoader worker keeps readers busy).
        max_bytes: start a new shard past this many bytes.
        png_compress_level: zlib level of the PNGs written for decoded pixels; lossless either
            way, and 1 writes ~5× faster than 9.
        max_side: downscale images whose longer side exceeds this (aspect kept, EXIF
            orientation applied, re-encoded as JPEG at jpeg_quality); 0 = store every image as
            it is. 512 suits phone photos.
        jpeg_quality: JPEG quality of images downscaled by max_side.
        layout: ``auto`` stores images that arrive as pixels with sides up to 64 px in block
            members of many images (read at memory speed, see ``sslflow.data.blocks``) and
            every other image as its own member; ``samples`` gives every image its own member
            (the plain WebDataset layout other tools read); ``blocks`` blocks every image that
            arrives as pixels.
    """

    shard_size: int = 5000
    max_bytes: int = 1 << 30
    png_compress_level: int = 1
    max_side: int = 0
    jpeg_quality: int = 90
    layout: str = "auto"

    def check(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be >= 1024, got {self.max_bytes}")
        if self.max_side < 0:
            raise ValueError(
                f"max_side must be 0 (keep sizes) or a side in pixels, got {self.max_side}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


def fingerprint(source_description: dict[str, Any], config: WriterConfig) -> str:
    body = json.dumps({"source": source_description, "writer": vars(config)}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def encode_sample(sample: Sample, stored: StoredImage) -> dict[str, Any]:
    """The tar members of one sample: the image, ``cls`` when labelled, and ``json`` metadata."""
    meta = {**sample.meta, "width": stored.width, "height": stored.height}
    if stored.original_mode != stored.mode:
        meta["original_mode"] = stored.original_mode
    if stored.original_size != (stored.width, stored.height):
        meta["original_size"] = list(stored.original_size)
    record: dict[str, Any] = {
        "__key__": sample.key,
        stored.ext: stored.data,
        "json": json.dumps(meta).encode(),
    }
    if sample.label is not None:
        record["cls"] = str(sample.label).encode()
    return record


def contained(sample: Sample) -> Sample:
    """``sample`` under a key safe to write (:func:`sslflow.data.keys.contained_key`); a
    renamed sample keeps its source key in ``meta["original_key"]``."""
    key = contained_key(sample.key)
    if key == sample.key:
        return sample
    return replace(sample, key=key, meta={**sample.meta, "original_key": sample.key})


def tar_bytes(record: dict[str, Any]) -> int:
    """Bytes a record takes in a tar: a 512-byte header per member plus data padded to 512."""
    return sum(
        512 + (len(v) + 511) // 512 * 512 for k, v in record.items() if not k.startswith("__")
    )


def write_shards(
    source: Source,
    out_dir: str | os.PathLike[str],
    shard_size: int = WriterConfig.shard_size,
    max_bytes: int = WriterConfig.max_bytes,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[ShardInfo], None] | None = None,
    max_side: int = WriterConfig.max_side,
    jpeg_quality: int = WriterConfig.jpeg_quality,
    png_compress_level: int = WriterConfig.png_compress_level,
    layout: str = WriterConfig.layout,
) -> Manifest:
    """Write ``source`` into ``out_dir`` as WebDataset shards plus ``manifest.json``.

    Args:
        source: where the images come from (see ``sslflow.data.sources.open_source``).
        out_dir: output folder; created if missing. Files that sslflow did not write there make
            it refuse, so shard sets never mix with foreign data.
        shard_size: samples per shard.
        max_bytes: bytes per shard before a new one starts.
        overwrite: replace a complete output written with another config.
        progress: show a tqdm progress bar.
        on_shard: called after each shard is complete (for logging or metrics).
        max_side: downscale images whose longer side exceeds this many pixels (aspect kept,
            EXIF orientation applied) and store them as JPEG; 0 keeps every image as it is.
        jpeg_quality: JPEG quality of downscaled images.
        png_compress_level: zlib level of PNGs written for decoded pixels (see ``WriterConfig``).
        layout: ``auto``, ``samples`` or ``blocks`` (see ``WriterConfig``).

    Returns:
        The manifest; unchanged and nothing written when the same config is already complete.
        Keys unsafe to write are renamed and counted per shard (``ShardInfo.renamed_keys``).

    Raises:
        ShardWriteError: a folder holding foreign files or another complete set (without
            ``overwrite``), or a source that gave no sample to write.
    """
    config = WriterConfig(shard_size, max_bytes, png_compress_level, max_side, jpeg_quality, layout)
    config.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_foreign_files(out)
    description = source.describe()
    print_ = fingerprint(description, config)

    existing = out / MANIFEST_NAME
    if existing.exists():
        manifest = Manifest.load(existing)
        if manifest.fingerprint == print_:
            log.info("shards in %s are complete for this config; nothing to do", out)
            return manifest
        if not overwrite:
            raise ShardWriteError(
                f"{out} holds a complete shard set written with another source or config; "
                "pass overwrite=True (--overwrite) to replace it, or choose another folder"
            )
        clear_own_files(out)

    done, skipped = resume_state(out, print_)
    if not done:
        clear_own_files(out)
        append_journal(out, {"fingerprint": print_, "source": description, "writer": vars(config)})
    remove_stale_shards(out, {entry["name"] for entry in done})
    position = done[-1]["position"] if done else 0
    shards = [ShardInfo(**{k: v for k, v in d.items() if k in SHARD_FIELDS}) for d in done]
    geometry = ImageGeometry()
    for entry in done:
        geometry.merge(ImageGeometry.from_json(entry["geometry"]))
    _write_remaining(source, out, config, shards, skipped, geometry, position, progress, on_shard)
    if not shards:
        reasons = "; ".join(f"{s['where']}: {s['reason']}" for s in skipped[:3])
        raise ShardWriteError(
            f"source {description.get('name')!r} gave no sample to write into {out} "
            f"({len(skipped)} skipped{': ' + reasons if reasons else ''}); check its path"
        )

    manifest = Manifest(
        fingerprint=print_,
        source=description,
        writer=vars(config),
        shards=shards,
        skipped=skipped,
        classes=source.classes,
        labelled=source.classes is not None,
        geometry=geometry if geometry.samples else None,
    )
    manifest.save(out)
    return manifest


class _OpenShard:
    """One shard being written as ``<name>.partial``; renamed to its name only when complete."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_name(final.name + ".partial")
        self.handle = open(self.partial, "wb")  # noqa: SIM115 - closed by finish() or abort()
        self.count = 0
        self.bytes = 0
        self.geometry = ImageGeometry()
        self.block = PendingBlock()
        self.blocks = 0
        self.renamed = 0

    @property
    def size(self) -> int:
        """Tar bytes written plus those of the pending block."""
        return self.bytes + self.block.nbytes

    def _members(self, record: dict[str, Any]) -> None:
        key = record["__key__"]
        for field in sorted(k for k in record if not k.startswith("__")):  # webdataset's order
            self.bytes += write_member(self.handle, f"{key}.{field}", record[field])

    def count_rename(self, sample: Sample) -> None:
        """Count (and warn about) a sample whose source key was renamed to ``sample.key``."""
        self.renamed += 1
        log.warning(
            "renamed key %r to %r (unsafe to write); %s has %d renamed keys so far",
            sample.meta["original_key"],
            sample.key,
            self.final.name,
            self.renamed,
        )

    def write(self, record: dict[str, Any], stored: StoredImage) -> None:
        self._members(record)
        self.count += 1
        self.geometry.add(stored.mode, stored.width, stored.height)

    def add_to_block(self, sample: Sample, pixels: np.ndarray) -> None:
        """Gather ``pixels`` into the pending block, written when full or the shape changes."""
        if not self.block.fits(pixels):
            self.flush_block()
        self.block.add(sample, pixels)
        self.count += 1
        self.geometry.add("L" if pixels.ndim == 2 else "RGB", pixels.shape[1], pixels.shape[0])
        if len(self.block) >= BLOCK_SIZE:
            self.flush_block()

    def flush_block(self) -> None:
        if len(self.block):
            self._members(self.block.members(self.blocks))
            self.blocks += 1
            self.block = PendingBlock()

    def finish(self) -> ShardInfo:
        """End the archive, fsync, hash and rename: the shard is visible only when complete."""
        self.flush_block()
        end_archive(self.handle, self.bytes)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        info = ShardInfo(
            self.final.name,
            self.count,
            self.partial.stat().st_size,
            sha256_file(self.partial),
            self.renamed,
        )
        os.replace(self.partial, self.final)
        return info

    def abort(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


def _write_remaining(
    source: Source,
    out: Path,
    config: WriterConfig,
    shards: list[ShardInfo],
    skipped: list[dict[str, Any]],
    geometry: ImageGeometry,
    position: int,
    progress: bool,
    on_shard: Callable[[ShardInfo], None] | None,
) -> None:
    """Write shards from source ``position`` on, appending each completed one to ``shards``.

    A shard is cut before a sample that would take it past ``shard_size`` samples or
    ``max_bytes`` tar bytes, so the journal's position is always the end of a whole shard. Each
    shard's image geometry goes into its journal entry and is merged into ``geometry``.
    """
    from tqdm.auto import tqdm

    pending_skips: list[dict[str, Any]] = []
    shard: _OpenShard | None = None

    def finish(open_shard: _OpenShard, end: int) -> None:
        info = open_shard.finish()
        shards.append(info)
        skipped.extend(pending_skips)
        geometry.merge(open_shard.geometry)
        entry = {
            **vars(info),
            "position": end,
            "skipped": list(pending_skips),
            "geometry": open_shard.geometry.to_json(),
        }
        append_journal(out, entry)
        pending_skips.clear()
        if on_shard:
            on_shard(info)

    bar = tqdm(
        total=len(source) or None,
        initial=position,
        disable=not progress,
        desc=f"shards → {out.name}",
        unit="img",
    )
    try:
        for item in source.iter_items(position):
            stored = pixels = None
            renamed = False
            if isinstance(item, Sample):
                safe = contained(item)
                renamed, item = safe is not item, safe
                try:
                    pixels = block_pixels(item.image, config.layout, config.max_side)
                    stored = stored_image(item.image, config) if pixels is None else None
                except UNREADABLE as exc:
                    item = Skipped(
                        where=item.meta.get("path", item.key), reason=f"{type(exc).__name__}: {exc}"
                    )
            if isinstance(item, Skipped):
                pending_skips.append({"where": item.where, "reason": item.reason})
                log.warning("skipped %s: %s", item.where, item.reason)
            else:
                record = encode_sample(item, stored) if stored is not None else {}
                size = tar_bytes(record) if pixels is None else block_bytes(item, pixels)
                if shard is not None and (
                    shard.count >= config.shard_size or shard.size + size > config.max_bytes
                ):
                    finish(shard, position)  # the full shard ends before this sample
                    shard = None
                if shard is None:
                    shard = _OpenShard(out / (SHARD_PATTERN % len(shards)))
                if renamed:
                    shard.count_rename(item)
                if pixels is not None:
                    shard.add_to_block(item, pixels)
                elif stored is not None:
                    shard.write(record, stored)
            position += 1
            bar.update(1)
        if shard is not None:
            finish(shard, position)
            shard = None
    except BaseException:
        if shard is not None:  # incomplete: never renamed
            shard.abort()
        for partial in out.glob("*.partial"):
            partial.unlink()
        raise
    finally:
        bar.close()
    if pending_skips:  # skips after the last sample belong to no shard; keep them all the same
        skipped.extend(pending_skips)


def _refuse_foreign_files(out: Path) -> None:
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ShardWriteError(
            f"{out} holds files sslflow did not write ({shown}); refusing to mix shard sets. "
            "Choose an empty or new folder."
        )
