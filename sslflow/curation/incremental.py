"""Incremental assignment: new embeddings placed in an existing hierarchy without re-clustering.

Each new row goes to its nearest level-0 (leaf) centroid; its path through the levels follows
the stored assignments. Drift = mean squared distance of the new rows to their leaf centroid
divided by the same mean for the rows the hierarchy was built on: ≈ 1 when the new data looks
like the old, clearly above 1 when it falls between or outside the known clusters (time to
re-cluster).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sslflow.curation.assignment import AssignConfig, assign
from sslflow.curation.hierarchy_store import Hierarchy, HierarchyError
from sslflow.curation.rows import Rows

if TYPE_CHECKING:
    from sslflow.curation.embedding_set import EmbeddingSet


@dataclass
class Assignment:
    """New rows in an existing hierarchy.

    Attributes:
        paths: (n, L) int32 cluster at every level (column 0 = leaf).
        distances: (n,) float32 squared distance to the leaf centroid.
        drift: mean new distance / mean build-time distance (level 0).
        leaf_counts: (K0,) int64 new rows per leaf.
    """

    paths: np.ndarray
    distances: np.ndarray
    drift: float
    leaf_counts: np.ndarray


def assign_new(hierarchy: Hierarchy, x: Rows, chunk_size: int = 16384) -> Assignment:
    """Assign (n, D) rows to ``hierarchy``'s leaves; fails on a dimension mismatch."""
    if x.shape[1] != hierarchy.dim:
        raise HierarchyError(
            f"new embeddings have dimension {x.shape[1]} but the hierarchy at {hierarchy.root} "
            f"was built on dimension {hierarchy.dim}: embed them with the same embedder"
        )
    centroids = hierarchy.centroids(0)
    spherical = bool(hierarchy.config["spherical"])
    leaves, distances = assign(x, centroids, AssignConfig(chunk_size, spherical))
    paths = hierarchy.leaf_paths()[leaves]
    reference = float(hierarchy.stats[0]["mean_distance"])
    drift = (
        float(distances.mean(dtype=np.float64)) / max(reference, 1e-12) if len(distances) else 0.0
    )
    return Assignment(
        paths=paths.astype(np.int32),
        distances=distances,
        drift=drift,
        leaf_counts=np.bincount(leaves, minlength=len(centroids)).astype(np.int64),
    )


def assign_shards(pool: EmbeddingSet, hierarchy: Hierarchy, shards: Path, out: Path) -> Assignment:
    """Embed the shard set ``shards`` into ``out`` exactly as the pool was embedded, then place
    it in ``hierarchy``.

    The pool's embedder settings come from its identity, and its PCA projection is copied into
    ``out`` so the new rows share the pool's space instead of fitting a projection of their own.
    """
    from sslflow.curation.embeddings import EmbedConfig, embed_shards  # lazy: torch, timm

    identity = pool.meta()["identity"]
    config = EmbedConfig(
        **{f.name: identity[f.name] for f in dataclasses.fields(EmbedConfig) if f.name in identity}
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("pca_mean.npy", "pca_components.npy"):
        if (pool.root / name).is_file() and not (out / name).exists():
            shutil.copy2(pool.root / name, out / name)
    return assign_new(hierarchy, embed_shards(shards, out, config).array())
