"""Shards written by Python's tarfile, not by sslflow: the foreign data the readers must survive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def png(value: int) -> bytes:
    """A 6×5 grey PNG filled with ``value`` (read back, its first pixel names it)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 5), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def foreign_shard(path: Path, members: list[tuple[str, bytes]]) -> str:
    """A tar written by Python's tarfile (GNU long names), members in the given order."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)
