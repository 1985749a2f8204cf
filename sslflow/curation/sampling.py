"""Balanced hierarchical sampling from a k-means hierarchy (Vo et al., 2024, Sec. 4).

Hand-written: no library allocates a sample top-down through a cluster tree.

Allocation: the root (all points) gets the target N. At each node, its target t is split over
its children of sizes s_1..s_n with the largest integer cap x such that Σ min(x, s_j) ≤ t;
every child gets min(x, s_j), and the remainder t - Σ min(x, s_j) (smaller than the number of
children larger than x) goes one point each to children larger than x, drawn with the seed.
This repeats down to the level-0 (leaf) clusters, where points are picked ``random``ly, or the
``closest`` to / ``farthest`` from the leaf centroid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.curation.hierarchy_store import Hierarchy
from sslflow.curation.stats import normalised_entropy
from sslflow.curation.storage import save_json, save_lines, save_npy


class LeafStrategy(str, Enum):
    """How points are picked inside a leaf cluster."""

    RANDOM = "random"
    CLOSEST = "closest"
    FARTHEST = "farthest"


def allocate(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``target`` over children of ``sizes`` (n,) as evenly as their sizes allow.

    Returns:
        (n,) int64 allocations; ``alloc <= sizes`` and ``alloc.sum() == min(target, sizes.sum())``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if target >= sizes.sum():
        return sizes.copy()
    low, high = (
        0,
        int(sizes.max()),
    )  # f(x) = Σ min(x, s) is non-decreasing: bisect for max x with f(x) ≤ t
    while low < high:
        middle = (low + high + 1) // 2
        if np.minimum(sizes, middle).sum() <= target:
            low = middle
        else:
            high = middle - 1
    alloc = np.minimum(sizes, low)
    remainder = int(target - alloc.sum())
    if remainder:
        above = np.flatnonzero(sizes > low)
        alloc[rng.choice(above, size=remainder, replace=False)] += 1
    return alloc


@dataclass
class CuratedIndex:
    """The curated selection.

    Attributes:
        rows: (n,) int64 embedding rows of the selected samples (sorted).
        keys: their sample keys.
        paths: (n, L) int32 cluster of each sample at every level (column 0 = leaf).
        counts: per level, (K_i,) int64 curated counts per cluster.
        pool_counts: per level, (K_i,) int64 pool counts per cluster.
    """

    rows: np.ndarray
    keys: list[str]
    paths: np.ndarray
    counts: list[np.ndarray]
    pool_counts: list[np.ndarray]

    def summary(self) -> dict[str, Any]:
        top_pool, top = self.pool_counts[-1], self.counts[-1]
        return {
            "selected": len(self.rows),
            "pool": int(top_pool.sum()),
            "entropy_top_pool": normalised_entropy(top_pool),
            "entropy_top_curated": normalised_entropy(top),
            "entropy_leaf_pool": normalised_entropy(self.pool_counts[0]),
            "entropy_leaf_curated": normalised_entropy(self.counts[0]),
        }

    def save(self, folder: str | Path) -> Path:
        """``rows.npy``, ``paths.npy``, ``keys.txt``, ``counts_level_NN.npy`` and
        ``summary.json``."""
        folder = Path(folder)
        save_npy(folder / "rows.npy", self.rows)
        save_npy(folder / "paths.npy", self.paths)
        for level, (counts, pool) in enumerate(zip(self.counts, self.pool_counts, strict=True)):
            save_npy(folder / f"counts_level_{level:02d}.npy", counts)
            save_npy(folder / f"pool_counts_level_{level:02d}.npy", pool)
        save_lines(folder / "keys.txt", self.keys)
        save_json(folder / "summary.json", self.summary())
        return folder


def _children(parents: np.ndarray, n_parents: int) -> list[np.ndarray]:
    """For each parent cluster, the (sorted) indices of its children."""
    order = np.argsort(parents, kind="stable")
    bounds = np.searchsorted(parents[order], np.arange(n_parents + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(n_parents)]


def sample_hierarchy(
    hierarchy: Hierarchy,
    keys: list[str],
    target: int,
    strategy: LeafStrategy | str = LeafStrategy.RANDOM,
    seed: int = 0,
) -> CuratedIndex:
    """Balanced hierarchical sampling of ``target`` points (see the module docstring).

    Args:
        hierarchy: a complete hierarchy (``load_hierarchy``).
        keys: the N sample keys of the embeddings the hierarchy was built from.
        target: the curated size N; above the pool size the whole pool is returned (warning).
        strategy: leaf strategy (random, closest, farthest).
        seed: seeds the remainder draws and the random leaf picks.
    """
    strategy = LeafStrategy(strategy)
    if target < 1:
        raise ValueError(f"target size must be ≥ 1, got {target}")
    rng = np.random.default_rng(seed)
    levels = hierarchy.n_levels
    offsets, members = hierarchy.clusters(0)
    leaf_sizes = np.diff(offsets)
    pool_counts = [leaf_sizes.astype(np.int64)]
    for level in range(1, levels):
        pool_counts.append(
            np.bincount(
                hierarchy.assignments(level),
                weights=pool_counts[-1],
                minlength=len(hierarchy.centroids(level)),
            ).astype(np.int64)
        )
    total = int(leaf_sizes.sum())
    if target > total:
        warnings.warn(
            f"target size {target} exceeds the pool of {total} points: taking the whole pool",
            stacklevel=2,
        )
        target = total
    alloc = allocate(pool_counts[-1], target, rng)
    for level in range(levels - 1, 0, -1):
        child_sizes = pool_counts[level - 1]
        child_alloc = np.zeros(len(child_sizes), dtype=np.int64)
        for parent, children in enumerate(_children(hierarchy.assignments(level), len(alloc))):
            if alloc[parent]:
                child_alloc[children] = allocate(child_sizes[children], int(alloc[parent]), rng)
        alloc = child_alloc
    picked = [
        _pick(members[offsets[leaf] : offsets[leaf + 1]], int(count), strategy, rng)
        for leaf, count in enumerate(alloc)
        if count
    ]
    points = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    leaf_paths = hierarchy.leaf_paths()
    paths = leaf_paths[hierarchy.assignments(0)[points]]
    counts = [
        np.bincount(paths[:, level], minlength=len(pool_counts[level])).astype(np.int64)
        for level in range(levels)
    ]
    rows = hierarchy.rows()[points]
    return CuratedIndex(
        rows=rows,
        keys=[keys[r] for r in rows],
        paths=paths.astype(np.int32),
        counts=counts,
        pool_counts=pool_counts,
    )


def _pick(
    members: np.ndarray, count: int, strategy: LeafStrategy, rng: np.random.Generator
) -> np.ndarray:
    """``count`` of a leaf's ``members`` (sorted nearest first) by ``strategy``."""
    if strategy is LeafStrategy.CLOSEST:
        return members[:count]
    if strategy is LeafStrategy.FARTHEST:
        return members[len(members) - count :]
    return rng.choice(members, size=count, replace=False)
