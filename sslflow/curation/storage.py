"""Atomic writes of ``.npy``, JSON and text files: nothing half written under its final name."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` (no pickle) via a ``.partial`` file renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(partial, path)
    return path


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` written by ``save_npy`` (pickled object arrays are refused)."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_json(path: Path, body: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(body, indent=2, sort_keys=True, default=_jsonable))
    os.replace(partial, path)
    return path


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def save_lines(path: Path, lines: Iterable[str]) -> Path:
    """One item per line (sample keys hold no newline), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    os.replace(partial, path)
    return path


def load_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
