"""The manifest of a shard set: what each shard holds, its sha256, and what was skipped."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sslflow.data.geometry import ImageGeometry
from sslflow.data.tar import SHARD_SUFFIXES
from sslflow.data.urls import check_url

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One complete shard: file name (relative to the manifest), samples, bytes, sha256, and
    how many of its keys were renamed because the source's were unsafe to write
    (``sslflow.data.keys.contained_key``)."""

    name: str
    samples: int
    bytes: int
    sha256: str
    renamed_keys: int = 0


@dataclass
class Manifest:
    """Everything a reader or a later stage needs to know about a shard set.

    ``fingerprint`` hashes the source identity and writer config: the same fingerprint over a
    complete output means there is nothing to do. ``geometry`` (colour modes and side lengths
    of the stored images) is what every ``auto`` image setting downstream is resolved from;
    shard sets written by other tools have none (see ``sslflow.data.geometry.measure``).
    Shard names are files inside the manifest's folder.
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
    def renamed_keys(self) -> int:
        """Source keys that were unsafe to write and were renamed (see ``ShardInfo``)."""
        return sum(s.renamed_keys for s in self.shards)

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
            "renamed_keys": self.renamed_keys,
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
    def from_json(
        cls, body: dict[str, Any], root: Path | None = None, where: str = "manifest"
    ) -> Manifest:
        """The manifest ``body`` (read from ``where``, named in errors).

        Raises:
            ValueError: another format version, or a shard name outside the manifest's folder.
        """
        if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
            found = body.get("format_version") if isinstance(body, dict) else type(body).__name__
            raise ValueError(f"{where}: not an sslflow manifest of format 1 (found {found!r})")
        try:
            shards = [ShardInfo(**s) for s in body["shards"]]
            manifest = cls(
                fingerprint=body["fingerprint"],
                source=body["source"],
                writer=body["writer"],
                shards=shards,
                skipped=body.get("skipped", []),
                classes=body.get("classes"),
                labelled=body.get("labelled", False),
                geometry=ImageGeometry.from_json(body["geometry"])
                if body.get("geometry")
                else None,
                root=root,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from exc
        for shard in shards:
            check_shard_name(shard.name, where)
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Load ``path`` (a manifest.json or the folder holding one)."""
        target = Path(path)
        if target.is_dir():
            target = target / MANIFEST_NAME
        if not target.is_file():
            raise FileNotFoundError(f"no manifest at {target}: write the shards first")
        try:
            body = json.loads(target.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{target}: not valid JSON ({exc}); write the shards again") from exc
        return cls.from_json(body, root=target.parent, where=str(target))


def check_shard_name(name: str, where: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a relative path inside the manifest's folder
    (no absolute path, ``..`` segment, URL or ``pipe:`` command: a manifest names only files
    beside it)."""
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in name
        or ":" in name
        or any(ord(c) < 32 for c in name)
    ):
        raise ValueError(
            f"{where}: shard name {name!r} is not a file inside the manifest's folder; a "
            "manifest may name only files beside it (list other URLs in a URL list instead)"
        )


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


def resolve_urls(spec: str, allow_pipe: bool = False) -> tuple[list[str], Manifest | None]:
    """Turn a manifest path/URL, a file of URLs, or a URL list into shard URLs.

    Args:
        spec: the manifest (local or http(s)://), the URL list file, or URLs.
        allow_pipe: the user asked for ``pipe:`` commands in their own configuration; without
            it a ``pipe:`` URL is refused (see :mod:`sslflow.data.urls`).

    Returns the URLs and the manifest when there is one (its classes and counts are useful).

    Raises:
        UrlRefused: a refused URL, naming the list file and line it came from.
    """
    spec = spec.strip()
    if spec.endswith(MANIFEST_NAME) or (
        Path(spec).is_dir() and (Path(spec) / MANIFEST_NAME).exists()
    ):
        if spec.startswith(("http://", "https://")):
            with urllib.request.urlopen(spec, timeout=30) as response:
                body = json.loads(response.read())
            manifest = Manifest.from_json(body, where=spec)
            base = spec.rsplit("/", 1)[0]
            return [f"{base}/{s.name}" for s in manifest.shards], manifest
        manifest = Manifest.load(check_url(spec, allow_pipe=False))
        return manifest.urls(), manifest
    if Path(spec).is_file() and not spec.endswith(SHARD_SUFFIXES):
        urls = []
        for number, line in enumerate(Path(spec).read_text().splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                urls += [check_url(u, allow_pipe, f"{spec}:{number}") for u in expand_braces(line)]
        return urls, None
    parts = [p for p in re.split(r"[\s,]+(?![^{]*})", spec) if p]
    return [check_url(u, allow_pipe) for p in parts for u in expand_braces(p)], None
