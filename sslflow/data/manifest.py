"""The manifest of a shard set: what each shard holds, its sha256, and what was skipped."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sslflow.data.geometry import ImageGeometry
from sslflow.data.tar import SHARD_SUFFIXES

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One complete shard: file name (relative to the manifest), samples, bytes and sha256."""

    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """Everything a reader or a later stage needs to know about a shard set.

    ``fingerprint`` hashes the source identity and writer config: the same fingerprint over a
    complete output means there is nothing to do. ``geometry`` (colour modes and side lengths
    of the stored images) is what every ``auto`` image setting downstream is resolved from;
    shard sets written by other tools have none (see ``sslflow.data.geometry.measure``).
    """

    fingerprint: str
    source: dict[str, Any]
    writer: dict[str, Any]
    shards: list[ShardInfo]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] | None = None
    labelled: bool = False
    geometry: ImageGeometry | None = None
    format_version: int = FORMAT_VERSION
    root: Path | None = None

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def content_hash(self) -> str:
        """sha256 over the shards' sha256s: a data version for the whole set."""
        joined = "\n".join(f"{s.name}:{s.sha256}" for s in self.shards)
        return hashlib.sha256(joined.encode()).hexdigest()

    def urls(self) -> list[str]:
        """Absolute paths of the shards (the manifest's folder is the base)."""
        base = self.root or Path(".")
        return [str(base / s.name) for s in self.shards]

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("root")
        body["geometry"] = self.geometry.to_json() if self.geometry else None
        body["totals"] = {
            "samples": self.total_samples,
            "bytes": self.total_bytes,
            "shards": len(self.shards),
            "skipped": len(self.skipped),
        }
        body["content_hash"] = self.content_hash
        return body

    def save(self, folder: Path) -> Path:
        """Write ``manifest.json`` atomically (temporary name, fsync, rename)."""
        target = folder / MANIFEST_NAME
        atomic_write_text(target, json.dumps(self.to_json(), indent=2) + "\n")
        self.root = folder
        return target

    @classmethod
    def from_json(cls, body: dict[str, Any], root: Path | None = None) -> Manifest:
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format {body.get('format_version')!r}")
        return cls(
            fingerprint=body["fingerprint"],
            source=body["source"],
            writer=body["writer"],
            shards=[ShardInfo(**s) for s in body["shards"]],
            skipped=body.get("skipped", []),
            classes=body.get("classes"),
            labelled=body.get("labelled", False),
            geometry=ImageGeometry.from_json(body["geometry"]) if body.get("geometry") else None,
            root=root,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Load ``path`` (a manifest.json or the folder holding one)."""
        target = Path(path)
        if target.is_dir():
            target = target / MANIFEST_NAME
        if not target.is_file():
            raise FileNotFoundError(f"no manifest at {target}: write the shards first")
        return cls.from_json(json.loads(target.read_text()), root=target.parent)


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` so that ``target`` is either absent, old, or complete: never partial."""
    partial = target.with_name(target.name + ".partial")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..009}`` ranges the way WebDataset URLs write them."""
    import braceexpand

    return list(braceexpand.braceexpand(pattern))


def resolve_urls(spec: str) -> tuple[list[str], Manifest | None]:
    """Turn a manifest path/URL, a file of URLs, or a URL list into shard URLs.

    Returns the URLs and the manifest when there is one (its classes and counts are useful).
    """
    spec = spec.strip()
    if spec.endswith(MANIFEST_NAME) or (
        Path(spec).is_dir() and (Path(spec) / MANIFEST_NAME).exists()
    ):
        if spec.startswith(("http://", "https://")):
            with urllib.request.urlopen(spec, timeout=30) as response:
                body = json.loads(response.read())
            manifest = Manifest.from_json(body)
            base = spec.rsplit("/", 1)[0]
            return [f"{base}/{s.name}" for s in manifest.shards], manifest
        manifest = Manifest.load(spec)
        return manifest.urls(), manifest
    if Path(spec).is_file() and not spec.endswith(SHARD_SUFFIXES):
        lines = [ln.strip() for ln in Path(spec).read_text().splitlines()]
        return [u for ln in lines if ln and not ln.startswith("#") for u in expand_braces(ln)], None
    parts = [p for p in re.split(r"[\s,]+(?![^{]*})", spec) if p]
    return [u for p in parts for u in expand_braces(p)], None
