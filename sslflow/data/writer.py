"""Write a source into WebDataset tar shards, atomically and resumably.

Each shard is written as ``shard-NNNNNN.tar.partial`` and renamed once complete; a progress
journal records every completed shard with the source position it reached, so a rerun with
the same config resumes after the last complete shard. ``manifest.json`` appears last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from sslflow.data.geometry import ImageGeometry, unified_mode
from sslflow.data.manifest import MANIFEST_NAME, Manifest, ShardInfo, sha256_file
from sslflow.data.sources import EncodedImage, Sample, Skipped, Source

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-%06d.tar"
JOURNAL_NAME = ".sslflow-progress.jsonl"
OWN_FILE = re.compile(
    r"^(shard-\d{6}\.tar(\.partial)?|manifest\.json(\.partial)?|\.sslflow-progress\.jsonl)$"
)


class ShardWriteError(RuntimeError):
    """The output folder cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class WriterConfig:
    """How samples are packed into shards."""

    shard_size: int = 10_000  # samples per shard; ~1-2 shards per DataLoader worker is plenty
    max_bytes: int = 1 << 30  # also start a new shard past this many bytes
    png_compress_level: int = 1  # lossless either way; 1 writes ~5x faster than 9
    max_side: int = 0  # downscale images whose longer side exceeds this (0 = store as they are)
    jpeg_quality: int = 90  # quality of the JPEG a downscaled image is re-encoded as

    def check(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be >= 1024, got {self.max_bytes}")
        if self.max_side < 0:
            raise ValueError(f"max_side must be 0 (keep sizes) or a side in pixels, got {self.max_side}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


# What a decode failure of a source file raises; the writer skips such a sample and counts it.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class StoredImage:
    """The bytes written for one image, with the geometry the manifest records."""

    ext: str
    data: bytes
    mode: str
    width: int
    height: int


def fingerprint(source_description: dict[str, Any], config: WriterConfig) -> str:
    body = json.dumps({"source": source_description, "writer": vars(config)}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _downscaled(image: Image.Image, config: WriterConfig) -> StoredImage:
    """Longer side to ``max_side`` (aspect kept, EXIF orientation applied), as JPEG.

    ``draft`` lets the JPEG decoder decode at 1/2, 1/4 or 1/8 scale when that still covers the
    target, so a 12-megapixel photo is never decoded at full size.
    """
    scale = config.max_side / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    mode = unified_mode(image.mode)
    if image.format == "JPEG":
        image.draft(mode, target)
    upright = ImageOps.exif_transpose(image).convert(mode)
    if upright.size != image.size:  # rotated by EXIF: the target turns with it
        target = target[::-1]
    resized = upright.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=config.jpeg_quality)
    return StoredImage("jpg", buffer.getvalue(), mode, *target)


def stored_image(image: Image.Image | EncodedImage, config: WriterConfig) -> StoredImage:
    """What is written for ``image``: its own bytes when it fits, else a downscaled JPEG.

    Encoded bytes are fully decoded once, so a truncated or corrupt file is skipped at ingest
    rather than failing a training run later.

    Raises:
        One of ``UNREADABLE`` when the image cannot be decoded.
    """
    too_big = config.max_side > 0
    if isinstance(image, EncodedImage):
        with Image.open(io.BytesIO(image.data)) as opened:
            if too_big and max(opened.size) > config.max_side:
                return _downscaled(opened, config)
            opened.load()
            return StoredImage(image.ext, image.data, unified_mode(opened.mode), *opened.size)
    if too_big and max(image.size) > config.max_side:
        return _downscaled(image, config)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=config.png_compress_level)
    return StoredImage("png", buffer.getvalue(), unified_mode(image.mode), *image.size)


def encode_sample(sample: Sample, stored: StoredImage) -> dict[str, Any]:
    """The tar members of one sample: the image, ``cls`` when labelled, and ``json`` metadata."""
    if "." in sample.key:
        raise ShardWriteError(f"key {sample.key!r} contains a dot; WebDataset would split it")
    meta = {**sample.meta, "width": stored.width, "height": stored.height}
    if (sample.meta.get("width"), sample.meta.get("height")) not in ((stored.width, stored.height), (None, None)):
        meta["original_size"] = [sample.meta.get("width"), sample.meta.get("height")]
    record: dict[str, Any] = {"__key__": sample.key, stored.ext: stored.data, "json": json.dumps(meta).encode()}
    if sample.label is not None:
        record["cls"] = str(sample.label).encode()
    return record


def tar_bytes(record: dict[str, Any]) -> int:
    """Bytes a record takes in a tar: a 512-byte header per member plus data padded to 512."""
    return sum(512 + (len(v) + 511) // 512 * 512 for k, v in record.items() if not k.startswith("__"))


def write_shards(
    source: Source,
    out_dir: str | os.PathLike[str],
    shard_size: int = 10_000,
    max_bytes: int = 1 << 30,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[ShardInfo], None] | None = None,
    max_side: int = 0,
    jpeg_quality: int = 90,
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

    Returns:
        The manifest; unchanged and nothing written when the same config is already complete.
    """
    config = WriterConfig(shard_size=shard_size, max_bytes=max_bytes, max_side=max_side, jpeg_quality=jpeg_quality)
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
        _clear(out)

    done, skipped = _resume_state(out, print_)
    if not done:
        _clear(out)
        _append_journal(out, {"fingerprint": print_, "source": description, "writer": vars(config)})
    _remove_stale(out, {entry["name"] for entry in done})
    position = done[-1]["position"] if done else 0
    shards = [ShardInfo(**{k: d[k] for k in ("name", "samples", "bytes", "sha256")}) for d in done]
    geometry = ImageGeometry()
    for entry in done:
        geometry.merge(ImageGeometry.from_json(entry["geometry"]))
    _write_remaining(source, out, config, shards, skipped, geometry, position, progress, on_shard)

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

    Each shard's image geometry goes into its journal entry and is merged into ``geometry``.
    """
    import webdataset as wds
    from tqdm.auto import tqdm

    pending_skips: list[dict[str, Any]] = []
    state = {"position": position, "bytes": 0}
    shard_geometry = ImageGeometry()

    def finish_shard(partial_name: str) -> None:
        nonlocal shard_geometry
        partial = Path(partial_name)
        count = writer.count
        if count == 0:
            partial.unlink(missing_ok=True)  # never leave an empty shard behind
            return
        final = partial.with_suffix("")
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        info = ShardInfo(final.name, count, partial.stat().st_size, sha256_file(partial))
        os.replace(partial, final)
        shards.append(info)
        skipped.extend(pending_skips)
        geometry.merge(shard_geometry)
        _append_journal(
            out,
            {**vars(info), "position": state["position"], "skipped": pending_skips, "geometry": shard_geometry.to_json()},
        )
        pending_skips.clear()
        shard_geometry = ImageGeometry()
        if on_shard:
            on_shard(info)

    pattern = str(out / (SHARD_PATTERN + ".partial"))
    total = len(source) or None
    bar = tqdm(total=total, initial=position, disable=not progress, desc=f"shards → {out.name}", unit="img")
    writer = wds.ShardWriter(
        pattern,
        maxcount=config.shard_size,
        maxsize=float("inf"),  # shards are cut here, on real tar bytes (ShardWriter counts payload only)
        post=finish_shard,
        start_shard=len(shards),
        verbose=0,
        mtime=0,  # an integer mtime keeps tarfile from adding a pax header to every member,
        # and makes shards byte-identical across reruns (stable sha256)
    )
    try:
        for item in source.iter_items(position):
            stored = None
            if isinstance(item, Sample):
                try:
                    stored = stored_image(item.image, config)
                except UNREADABLE as exc:
                    item = Skipped(where=item.meta.get("path", item.key), reason=f"{type(exc).__name__}: {exc}")
            if isinstance(item, Skipped):
                pending_skips.append({"where": item.where, "reason": item.reason})
                log.warning("skipped %s: %s", item.where, item.reason)
            elif stored is not None:
                record = encode_sample(item, stored)
                size = tar_bytes(record)
                full = writer.count >= config.shard_size or state["bytes"] + size > config.max_bytes
                if full and writer.count > 0:
                    writer.next_stream()  # close the full shard while position is still its end
                    state["bytes"] = 0
                writer.write(record)
                shard_geometry.add(stored.mode, stored.width, stored.height)
                state["bytes"] += size
            state["position"] += 1
            bar.update(1)
        writer.close()
    except BaseException:
        writer.post = None  # the open shard is incomplete: close it, never rename it
        writer.finish()
        for partial in out.glob("*.partial"):
            partial.unlink()
        raise
    finally:
        bar.close()
    if pending_skips:  # skips after the last sample belong to no shard; keep them all the same
        skipped.extend(pending_skips)


def _refuse_foreign_files(out: Path) -> None:
    foreign = sorted(p.name for p in out.iterdir() if not OWN_FILE.match(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ShardWriteError(
            f"{out} holds files sslflow did not write ({shown}); refusing to mix shard sets. "
            "Choose an empty or new folder."
        )


def _resume_state(out: Path, print_: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Completed shards from the journal when it matches this config and the files check out."""
    journal = out / JOURNAL_NAME
    if not journal.exists():
        return [], []
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("fingerprint") != print_:
        log.info("progress journal in %s is for another config; starting over", out)
        return [], []
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in lines[1:]:
        shard = out / entry["name"]
        if not shard.exists() or shard.stat().st_size != entry["bytes"]:
            log.warning("shard %s missing or changed; resuming before it", shard)
            break
        done.append(entry)
        skipped.extend(entry.get("skipped", []))
    if len(done) < len(lines) - 1:
        _rewrite_journal(out, lines[0], done)
    if done:
        log.info("resuming %s after %d complete shards", out, len(done))
    return done, skipped


def _rewrite_journal(out: Path, header: dict[str, Any], done: list[dict[str, Any]]) -> None:
    from sslflow.data.manifest import atomic_write_text

    text = "".join(json.dumps(e) + "\n" for e in [header, *done])
    atomic_write_text(out / JOURNAL_NAME, text)


def _append_journal(out: Path, entry: dict[str, Any]) -> None:
    with open(out / JOURNAL_NAME, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _remove_stale(out: Path, keep: set[str]) -> None:
    for path in out.iterdir():
        if path.name.startswith("shard-") and path.name not in keep:
            path.unlink()


def _clear(out: Path) -> None:
    for path in out.iterdir():
        if OWN_FILE.match(path.name):
            path.unlink()
