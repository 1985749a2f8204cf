"""Sample keys: made from any text, contained before they are written, unique per shard.

A key becomes part of tar member names (``<key>.png``) that other tools extract, and of the
files and reports downstream, so keys from foreign data are checked at write time
(:func:`contained_key`): no leading ``/``, no empty, ``.`` or ``..`` segment (WebDataset splits a
key at its first dot anyway), no control characters or backslashes, and at most
``MAX_KEY_BYTES`` so that ``<key>.webp`` fits a ustar name. A key that breaks a rule is
renamed to a flat safe form plus a digest of the original (stable across reruns, unique in
practice); writers count the renames in the manifest and keep the original in the sample's
metadata.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

MAX_KEY_BYTES = 100 - len(".webp")  # the longest member name a plain ustar header holds
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\.]")
_DIGEST_LENGTH = 8


def safe_key(text: str) -> str:
    """A WebDataset key from arbitrary text: no dots (a dot would split the key) or slashes."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def contained_key(key: str) -> str:
    """``key`` itself when it is safe to write, else its renamed form (see the module doc)."""
    segments = key.split("/")
    if (
        key
        and len(key.encode("utf-8")) <= MAX_KEY_BYTES
        and not _UNSAFE_CHARACTERS.search(key)
        and all(segments)
    ):
        return key
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]
    return f"{safe_key(key)[: MAX_KEY_BYTES - _DIGEST_LENGTH - 1]}-{digest}"


class KeyLedger:
    """The keys seen so far in one shard (or shard set): a later sample under a seen key is a
    duplicate, which readers skip, naming the shard and the key (the first one wins).
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def first(self, key: str) -> bool:
        """True the first time ``key`` comes; False after that."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def firsts(self, keys: Sequence[str]) -> list[bool] | None:
        """Per key of a block, whether it comes first; None when all do (the common case)."""
        if len(set(keys)) == len(keys) and self.seen.isdisjoint(keys):
            self.seen.update(keys)
            return None
        return [self.first(key) for key in keys]
