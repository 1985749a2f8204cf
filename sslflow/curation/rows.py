"""The rows k-means reads: an (N, D) matrix (often a float16 memmap) or a view of some rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
