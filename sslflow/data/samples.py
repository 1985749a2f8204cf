"""What a source yields: ``Sample`` records (or ``Skipped`` ones), and the ``Source`` protocol
the shard writer reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

SPLITS = ("train", "test", "all")


class SourceError(ValueError):
    """A source cannot be opened: the message says what was wrong and how to fix it."""


@dataclass(frozen=True)
class EncodedImage:
    """An image as the source's own encoded bytes; the shard writer decodes it once to check
    it, and keeps the bytes unless its mode or size must change."""

    data: bytes
    ext: str


@dataclass(frozen=True)
class Sample:
    """One image with its stable key, optional label and provenance metadata."""

    key: str
    image: Image.Image | EncodedImage
    label: int | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A source item that could not be read; counted in the manifest instead of aborting."""

    where: str
    reason: str


class Source(Protocol):
    """What ``write_shards`` needs from a source."""

    name: str

    @property
    def classes(self) -> list[str] | None:
        """Class names (index → name) when the source is labelled, else None."""
        ...

    def __len__(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the source; part of the shard set's fingerprint."""
        ...

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        """Yield items from position ``start`` on; each item counts as one position."""
        ...


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise SourceError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split
