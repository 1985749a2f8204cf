"""A complete embeddings folder, read and checked (the embeddings step writes it: see
:mod:`sslflow.curation.embeddings` for its layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.curation.rows import EmbeddingsError, check_rows
from sslflow.curation.storage import load_json, load_lines, load_npy

PIXELS_EMBEDDER = "pixels"  # the offline default: resized pixels projected by a PCA


@dataclass(frozen=True)
class EmbeddingSet:
    """A complete embeddings folder: embeddings.npy, keys.txt, labels.npy and meta.json."""

    root: Path

    @property
    def path(self) -> Path:
        return self.root / "embeddings.npy"

    def array(self) -> np.ndarray:
        """(N, D) float16 memmap (read-only)."""
        return load_npy(self.path, mmap=True)

    def keys(self) -> list[str]:
        return load_lines(self.root / "keys.txt")

    def labels(self) -> np.ndarray:
        return load_npy(self.root / "labels.npy")

    def meta(self) -> dict[str, Any]:
        return load_json(self.root / "meta.json")

    def embedder(self) -> str:
        """The ``EmbedConfig.embedder`` that wrote the rows (a model URI pinned to a version)."""
        return str(self.meta()["identity"]["embedder"])


def load_embeddings(root: str | Path) -> EmbeddingSet:
    """The complete embeddings folder ``root``, checked: (N, D) float rows with N keys and N
    labels.

    Raises:
        FileNotFoundError: the folder is not complete.
        EmbeddingsError: malformed rows, keys or labels, naming the file.
    """
    root = Path(root)
    if not (root / "meta.json").is_file():
        raise FileNotFoundError(
            f"no complete embeddings at {root} (meta.json missing): run the embeddings step"
        )
    embeddings = EmbeddingSet(root)
    try:
        rows = embeddings.array()
    except ValueError as exc:
        raise EmbeddingsError(f"{embeddings.path} is not a readable .npy file: {exc}") from exc
    check_rows(rows, keys=len(embeddings.keys()), where=str(embeddings.path))
    labels = embeddings.labels()
    if labels.shape != (len(rows),):
        raise EmbeddingsError(
            f"{root / 'labels.npy'} has shape {labels.shape} for {len(rows)} embedding rows: "
            "rebuild the embeddings (asset embeddings)"
        )
    return embeddings
