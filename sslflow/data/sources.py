"""Image sources: each yields ``Sample`` (or ``Skipped``) records in a stable order.

A source is parsed from a name in one place (:func:`open_source`), so a bad name or a missing
path fails before anything is written, with the valid options in the message.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.data.datasets import cifar, digits, fashion_mnist
from sslflow.data.keys import KeyLedger, safe_key
from sslflow.data.samples import (
    EncodedImage,
    Sample,
    Skipped,
    Source,
    SourceError,
    check_split,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


# --------------------------------------------------------------------------- image folder


@dataclass
class ImageFolderSource:
    """JPEG/PNG/WebP files under ``root``; the first sub-folder is the class when all have one.

    Files are listed in a seeded shuffled order (``order_seed``), so consecutive samples, and
    so each shard, mix the classes of a folder sorted by class. Files are read as bytes; the
    shard writer decodes each once (see ``sslflow.data.encoding.stored_image``): RGB and L files
    keep their bytes, other modes (CMYK, P, RGBA, I;16 ...) become RGB PNGs.

    Attributes:
        root: the folder given by the user (keys are paths relative to it).
        files: image files in write order.
        labels: class index of each file (None: unlabelled).
        classes: class names (index → name), or None.
        split: which part of a ``train/``/``test/`` layout this is (``all`` otherwise).
        order_seed: seed of the shuffled order.
    """

    root: Path
    files: list[Path]
    labels: list[int] | None
    classes: list[str] | None
    split: str = "all"
    order_seed: int = 0
    name: str = "image-folder"

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict[str, Any]:
        """Identity: the listing with each file's size and modification time, so edits count."""
        digest = hashlib.sha256()
        for path in self.files:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(self.root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
        return {
            "name": self.name,
            "path": str(self.root),
            "split": self.split,
            "samples": len(self),
            "order_seed": self.order_seed,
            "listing": digest.hexdigest(),
        }

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        for index in range(start, len(self.files)):
            path = self.files[index]
            relative = path.relative_to(self.root).as_posix()
            try:
                data = path.read_bytes()
            except OSError as exc:
                yield Skipped(where=relative, reason=f"{type(exc).__name__}: {exc}")
                continue
            digest = hashlib.sha1(relative.encode()).hexdigest()[:8]
            yield Sample(
                key=f"{safe_key(Path(relative).with_suffix('').as_posix())[-60:]}-{digest}",
                image=EncodedImage(data, IMAGE_SUFFIXES[path.suffix.lower()]),
                label=None if self.labels is None else self.labels[index],
                meta={"source": self.name, "path": relative},
            )


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def image_folder(
    path: str | os.PathLike[str], split: str = "all", order_seed: int = 0
) -> ImageFolderSource:
    """List an image folder; keys are stable, the order is a seeded shuffle.

    A folder holding ``train/`` and ``test/`` sub-folders is split by them: ``train`` and
    ``test`` read one, ``all`` both; classes are then the sub-folders one level further down.
    Any other folder is one pool (``train`` and ``all`` both read all of it).

    Raises:
        SourceError: a missing or empty folder, or ``split="test"`` without a ``test/`` folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"image folder {root} does not exist or is not a directory")
    check_split(split)
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    if has_splits:
        bases = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}[split]
    elif split == "test":
        raise SourceError(
            f"split 'test' of image folder {root} needs train/ and test/ sub-folders; without "
            "them the "
            "folder is one pool: use split train or all"
        )
    else:
        bases = ["."]
    listed = [(base, file) for base in bases for file in _list_images(root / base)]
    if not listed:
        raise SourceError(
            f"no .jpg/.jpeg/.png/.webp files under {root}"
            + (f" ({', '.join(bases)})" if has_splits else "")
        )
    parts = [file.relative_to(root / base).parts for base, file in listed]
    labelled = all(len(p) >= 2 for p in parts)
    classes = sorted({p[0] for p in parts}) if labelled else None
    order = np.random.default_rng(order_seed).permutation(len(listed))
    files = [listed[i][1] for i in order]
    labels = [classes.index(parts[i][0]) for i in order] if classes else None
    return ImageFolderSource(
        root, files, labels, classes, split if has_splits else "all", order_seed
    )


# --------------------------------------------------------------------------- existing shards


@dataclass
class ShardSource:
    """Samples of existing WebDataset shards (paths, http(s):// URLs, and ``pipe:`` commands
    when ``allow_pipe``).

    Encoded images pass through unchanged; keys, labels and metadata are kept. A key that comes
    again anywhere in the shard set is skipped (the first sample wins) and an empty shard is
    warned about, both naming the shard.
    """

    urls: Sequence[str]
    classes: list[str] | None = None
    name: str = "shards"
    samples: int | None = None
    content_hash: str | None = None
    allow_pipe: bool = False

    def __len__(self) -> int:
        return self.samples or 0

    def describe(self) -> dict[str, Any]:
        """Identity: the URLs, and the manifest's content hash when there is one (new shards
        under the same names are a new source)."""
        return {"name": self.name, "urls": list(self.urls), "content_hash": self.content_hash}

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        from PIL import Image

        from sslflow.data.blocks import BlockError, is_block, read_block

        ledger = KeyLedger()
        position = 0
        for raw in self._records():
            url = raw["__url__"]
            if is_block(raw):  # images stored as pixels: one Sample each, blocked again on write
                try:
                    block = read_block(raw)
                except BlockError as exc:
                    raise SourceError(f"{exc} in shard {url}") from exc
                metas = block.meta()
                firsts = ledger.firsts(block.keys)
                for index, key in enumerate(block.keys):
                    if position >= start:
                        stored = block.labels[index]
                        yield (
                            _duplicate(url, key)
                            if firsts is not None and not firsts[index]
                            else Sample(
                                key=key,
                                image=Image.fromarray(block.pixels[index]),
                                label=None if stored < 0 else stored,
                                meta={**metas[index], "shard": url},
                            )
                        )
                    position += 1
                continue
            position += 1
            is_first = ledger.first(raw["__key__"])
            if position > start:
                yield _encoded_sample(raw) if is_first else _duplicate(url, raw["__key__"])

    def _records(self) -> Iterator[dict[str, Any]]:
        """The raw records of every shard in order; an unreadable shard raises ``SourceError``
        naming it and the last key read, an empty one is warned about."""
        from sslflow.data.tar import iter_samples, open_url
        from sslflow.data.urls import UrlRefused

        for url in self.urls:
            last_key = None
            try:
                with open_url(url, self.allow_pipe) as handle:
                    for raw in iter_samples(handle, url):
                        last_key = raw["__key__"]
                        yield raw
            except UrlRefused:
                raise
            except Exception as exc:  # any failure names the shard
                raise SourceError(
                    f"corrupt or unreadable shard {url} (after sample {last_key!r}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if last_key is None:
                log.warning("shard %s holds no samples", url)


def _duplicate(url: str, key: str) -> Skipped:
    return Skipped(where=f"{url}:{key}", reason="duplicate key (the first one is kept)")


def _encoded_sample(raw: dict[str, Any]) -> Sample | Skipped:
    """A per-sample record as a Sample; one without an image or with an unreadable label or
    metadata member is skipped, naming shard and key."""
    import json

    where = f"{raw['__url__']}:{raw['__key__']}"
    ext = next((e for e in ("png", "jpg", "jpeg", "webp") if e in raw), None)
    if ext is None:
        return Skipped(where=where, reason="no image")
    try:
        meta = json.loads(raw["json"]) if "json" in raw else {}
        label = int(raw["cls"]) if "cls" in raw else None
    except ValueError as exc:  # json's and int's parse errors (UnicodeDecodeError too)
        return Skipped(where=where, reason=f"unreadable label or metadata: {exc}")
    if not isinstance(meta, dict):
        return Skipped(where=where, reason="metadata is not a JSON object")
    return Sample(
        key=raw["__key__"],
        image=EncodedImage(raw[ext], "jpg" if ext == "jpeg" else ext),
        label=label,
        meta={**meta, "shard": raw["__url__"]},
    )


# --------------------------------------------------------------------------- several as one


@dataclass
class ConcatSource:
    """Several sources written as one pool, one after the other (the pool plus its inbox).

    Keys of every part but the first get the part's prefix, so they stay unique; labels are
    kept where a part names the same classes as the first, else the sample is unlabelled.

    Attributes:
        parts: ``(key prefix, source)`` pairs; the first part's prefix is not used.
        name: the source name recorded in the manifest.
    """

    parts: list[tuple[str, Source]]
    name: str = "pool"

    @property
    def classes(self) -> list[str] | None:
        return self.parts[0][1].classes

    def __len__(self) -> int:
        return sum(len(source) for _, source in self.parts)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parts": [{"prefix": prefix, **source.describe()} for prefix, source in self.parts],
        }

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        offset = 0
        for index, (prefix, source) in enumerate(self.parts):
            size = len(source)
            if start < offset + size:
                same_classes = source.classes == self.classes
                for item in source.iter_items(max(0, start - offset)):
                    if index == 0 or isinstance(item, Skipped):
                        yield item
                        continue
                    yield Sample(
                        key=f"{prefix}-{item.key}",
                        image=item.image,
                        label=item.label if same_classes else None,
                        meta={**item.meta, "part": prefix},
                    )
            offset += size


# --------------------------------------------------------------------------- parsing

SOURCE_NAMES = ("fashion-mnist", "cifar10", "cifar100", "image-folder", "digits", "shards")


def open_source(
    name: str,
    path: str | None = None,
    split: str = "train",
    download: bool = False,
    download_root: str | os.PathLike[str] | None = None,
    allow_pipe: bool = False,
) -> Source:
    """Open a source by name. Every error here is raised before anything is written.

    Args:
        name: one of ``SOURCE_NAMES``.
        path: folder (or, for ``shards``, a manifest.json, a file of URLs, or URLs joined by
            whitespace or commas; brace patterns like ``shard-{000000..000009}.tar`` expand).
        split: ``train``, ``test`` or ``all``: the official split of fashion-mnist, cifar and
            digits; the ``train/`` or ``test/`` sub-folder of an image folder that has both
            (a folder without them is one pool, read whole for ``train`` and ``all``). Shard
            sets are read whole.
        download: allow torchvision to download Fashion-MNIST when it is not found locally.
        download_root: where a download goes.
        allow_pipe: ``shards`` may run the ``pipe:`` commands in ``path``; only for a path the
            user wrote in their own configuration, never one found in data (the inbox).
    """
    check_split(split)
    if name == "fashion-mnist":
        return fashion_mnist(path, split, download, download_root)
    if name in ("cifar10", "cifar100"):
        return cifar(_require_path(name, path, "the cifar-*-batches-py folder"), split)
    if name == "image-folder":
        return image_folder(_require_path(name, path, "a folder of images"), split)
    if name == "digits":
        return digits(split)
    if name == "shards":
        from sslflow.data.manifest import resolve_urls

        spec = _require_path(name, path, "a manifest.json or URL list")
        urls, manifest = resolve_urls(spec, allow_pipe)
        if manifest is None:
            return ShardSource(urls=urls, allow_pipe=allow_pipe)
        return ShardSource(
            urls,
            manifest.classes,
            samples=manifest.total_samples,
            content_hash=manifest.content_hash,
        )
    raise SourceError(f"unknown source {name!r}; valid sources: {', '.join(SOURCE_NAMES)}")


def _require_path(name: str, path: str | None, what: str) -> str:
    if not path:
        raise SourceError(f"source {name!r} needs a path: pass --path with {what}")
    is_local = "://" not in path and not path.startswith("pipe:")
    is_pattern = name == "shards" and any(c in path for c in "{,\n ")
    if is_local and not Path(path).exists() and not is_pattern:
        raise SourceError(f"source {name!r}: path {path} does not exist; pass --path with {what}")
    return path
