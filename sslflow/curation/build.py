"""The kmeans_hierarchy stage in plain Python: near-duplicate removal, then the hierarchy.

:func:`cluster_pool` removes near-duplicates (:mod:`sslflow.curation.dedup`), builds the
hierarchy on the rows left (:mod:`sslflow.curation.hierarchical`: in this process, or through a
``build`` callable such as :func:`sslflow.curation.distributed.torchrun_builder`) and writes
``dedup.json`` into the hierarchy folder; curated_index reads it back with
:meth:`DedupSummary.load`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sslflow.curation.dedup import find_duplicates
from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
from sslflow.curation.hierarchy_store import Hierarchy
from sslflow.curation.storage import load_json, save_json

DEDUP_FILE = "dedup.json"

HierarchyBuilder = Callable[[np.ndarray | None], Hierarchy]
"""Builds the hierarchy on the given sorted embedding rows (None = all) and returns it."""


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicate removal before clustering.

    Attributes:
        enabled: remove near-duplicates before clustering
        threshold: cosine similarity at or above which two samples are near-duplicates (0.995
            on pixel-PCA embeddings removes ~0.6% of Fashion-MNIST train)
        neighbours: nearest neighbours searched per sample for duplicates
    """

    enabled: bool = True
    threshold: float = 0.995
    neighbours: int = 8


@dataclass(frozen=True)
class DedupSummary:
    """What deduplication removed (``dedup.json`` in the hierarchy folder).

    Attributes:
        duplicates_removed: samples dropped as near-duplicates.
        duplicate_groups: groups of two or more near-duplicates.
        pairs: example pairs (key a, key b, cosine similarity), most similar first.
    """

    duplicates_removed: int = 0
    duplicate_groups: int = 0
    pairs: list[tuple[str, str, float]] = field(default_factory=list)

    def save(self, hierarchy_dir: Path) -> Path:
        return save_json(hierarchy_dir / DEDUP_FILE, asdict(self))

    @classmethod
    def load(cls, hierarchy_dir: Path) -> DedupSummary:
        body = load_json(hierarchy_dir / DEDUP_FILE)
        pairs = [(str(a), str(b), float(s)) for a, b, s in body["pairs"]]
        return cls(int(body["duplicates_removed"]), int(body["duplicate_groups"]), pairs)


def remove_duplicates(
    embeddings: np.ndarray, keys: Sequence[str], config: DedupConfig
) -> tuple[np.ndarray | None, DedupSummary]:
    """The sorted rows to cluster (None = all, when dedup is off) and what was removed."""
    if not config.enabled:
        return None, DedupSummary()
    found = find_duplicates(embeddings, config.threshold, config.neighbours, progress=True)
    pairs = [(keys[a], keys[b], sim) for a, b, sim in found.pairs]
    return found.keep, DedupSummary(found.removed, found.groups, pairs)


@dataclass(frozen=True)
class ClusteredPool:
    """A built hierarchy, what dedup removed before it, and the seconds both took."""

    hierarchy: Hierarchy
    dedup: DedupSummary
    seconds: float

    def metrics(self) -> dict[str, float]:
        """Headline numbers and per-level statistics as flat MLflow metric names."""
        metrics: dict[str, float] = {
            "seconds": self.seconds,
            "points": len(self.hierarchy.rows()),
            "duplicates_removed": self.dedup.duplicates_removed,
        }
        for level, stats in enumerate(self.hierarchy.stats):
            metrics[f"level_{level}.inertia"] = stats["inertia"]
            metrics[f"level_{level}.size_entropy"] = stats["size_entropy"]
            metrics[f"level_{level}.empty_clusters"] = stats["empty_clusters"]
            metrics.update({f"level_{level}.size_{k}": v for k, v in stats["sizes"].items()})
        return metrics


def cluster_pool(
    embeddings: np.ndarray,
    keys: Sequence[str],
    out: Path,
    config: HierarchyConfig,
    dedup: DedupConfig,
    build: HierarchyBuilder | None = None,
) -> ClusteredPool:
    """Deduplicate, build the hierarchy into ``out`` (replacing one built otherwise), write
    ``dedup.json``.

    Raises:
        HierarchyError: the hierarchy cannot be built on these rows (see ``build_hierarchy``).
    """
    started = time.perf_counter()
    rows, removed = remove_duplicates(embeddings, keys, dedup)
    if build is None:
        hierarchy = build_hierarchy(embeddings, keys, out, config, rows=rows, overwrite=True)
    else:
        hierarchy = build(rows)
    removed.save(out)
    return ClusteredPool(hierarchy, removed, time.perf_counter() - started)
