"""The rows k-means reads: an (N, D) matrix (often a float16 memmap) or a view of some rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class EmbeddingsError(ValueError):
    """Embedding rows that cannot be clustered; the message names the file and what is wrong."""


class Rows(Protocol):
    """What k-means reads: ``len``, ``shape`` and row slicing / fancy indexing (an ndarray)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RowSubset:
    """A view of ``data`` restricted to ``rows`` (e.g. embeddings without NaN rows).

    Reading a slice copies only that chunk, so a memmap stays on disk.
    """

    data: Rows
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        return self.data[self.rows[index]]


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (at least 1e-12), in place when ``rows`` is float32."""
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def read_chunk(x: Rows, start: int, stop: int, spherical: bool) -> np.ndarray:
    """Rows ``start:stop`` as contiguous float32 (chunk, D), L2-normalised if ``spherical``."""
    chunk = np.ascontiguousarray(x[start:stop], dtype=np.float32)
    return unit_rows(chunk) if spherical else chunk


def check_rows(x: Rows, keys: int | None = None, where: str = "") -> None:
    """Raise ``EmbeddingsError`` unless ``x`` is (N, D) floating-point rows, N ≥ 1 and D ≥ 1,
    with ``keys`` rows when given.

    Args:
        x: the rows (a memmap names its file in the message).
        keys: how many keys the rows must match.
        where: what to call the rows; default: the memmap's file, else "the embeddings".
    """
    named = where or str(getattr(x, "filename", None) or "the embeddings")
    shape = tuple(x.shape)
    dtype = getattr(x, "dtype", None)
    problem = ""
    if len(shape) != 2:
        problem = f"has shape {shape}; embeddings are (N, D) rows, one per sample"
    elif dtype is not None and not np.issubdtype(dtype, np.floating):
        problem = f"holds {dtype} values; embeddings are float16, float32 or float64"
    elif 0 in shape:
        problem = f"has shape {shape}: no rows or no dimensions"
    elif keys is not None and keys != shape[0]:
        problem = f"has {shape[0]} rows for {keys} keys; each row needs exactly one key"
    if problem:
        raise EmbeddingsError(f"{named} {problem}: rebuild the embeddings (asset embeddings)")
