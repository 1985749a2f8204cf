"""The kmeans_hierarchy stage in plain Python: copy removal, then the hierarchy.

:func:`cluster_pool` removes copies of evaluation images and duplicates
(:mod:`sslflow.curation.dedup`, on :mod:`sslflow.curation.fingerprints`), builds the
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

from sslflow.curation.dedup import METHODS, CopyPair, CopyRule, find_copies_of, find_duplicates
from sslflow.curation.fingerprints import CopyFeatures
from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
from sslflow.curation.hierarchy_store import Hierarchy, HierarchyError
from sslflow.curation.rows import RowSubset
from sslflow.curation.storage import load_json, save_json

DEDUP_FILE = "dedup.json"

HierarchyBuilder = Callable[[np.ndarray | None], Hierarchy]
"""Builds the hierarchy on the given sorted embedding rows (None = all) and returns it."""


@dataclass(frozen=True)
class DedupConfig:
    """Copy removal before clustering (see ``sslflow.curation.dedup``).

    Attributes:
        enabled: remove exact and near-duplicate images before clustering
        decontaminate: also remove copies of eval_split's test images (when it is materialised)
        neighbours: nearest neighbours searched per image for near-duplicate candidates
        max_shift: thumbnail pixels of translation searched when comparing two images
        pixel_tolerance: grey levels two aligned pixels may differ by and still agree (images
            of at most 32 px)
        max_differing: largest share of differing foreground pixels in a copy (images of at
            most 32 px)
        min_correlation: least correlation of the 32 px thumbnails at a whole-pixel shift for
            two larger images to be aligned and compared
        min_coverage: least share of each image the other covers once aligned (larger images)
        min_detail_correlation: least correlation of the aligned high-pass thumbnails of a copy
            (larger images)
        examples: example pairs per method kept for the report
    """

    enabled: bool = True
    decontaminate: bool = True
    neighbours: int = CopyRule.neighbours
    max_shift: int = CopyRule.max_shift
    pixel_tolerance: int = CopyRule.pixel_tolerance
    max_differing: float = CopyRule.max_differing
    min_correlation: float = CopyRule.min_correlation
    min_coverage: float = CopyRule.min_coverage
    min_detail_correlation: float = CopyRule.min_detail_correlation
    examples: int = 8

    def rule(self) -> CopyRule:
        return CopyRule(
            self.neighbours,
            self.max_shift,
            self.pixel_tolerance,
            self.max_differing,
            self.min_correlation,
            self.min_coverage,
            self.min_detail_correlation,
        )


ExamplePair = tuple[str, str, str, float]
"""(kept key, removed key, method, score) — for contamination (pool key, eval key, ...)."""


@dataclass(frozen=True)
class DedupSummary:
    """What copy removal dropped (``dedup.json`` in the hierarchy folder).

    Attributes:
        duplicates_removed: pool images dropped as copies of other pool images.
        duplicate_groups: groups of two or more copies.
        removed_by_method: of those, how many each method (exact, pixels, correlation) linked.
        contaminated_removed: pool images dropped as copies of evaluation test images.
        decontaminated_against: the evaluation shard set compared with ("" = none).
        pairs: example duplicate pairs per method (kept key, removed key, method, score).
        contaminated: example contamination pairs (pool key, eval key, method, score).
    """

    duplicates_removed: int = 0
    duplicate_groups: int = 0
    removed_by_method: dict[str, int] = field(default_factory=dict)
    contaminated_removed: int = 0
    decontaminated_against: str = ""
    pairs: list[ExamplePair] = field(default_factory=list)
    contaminated: list[ExamplePair] = field(default_factory=list)

    def save(self, hierarchy_dir: Path) -> Path:
        return save_json(hierarchy_dir / DEDUP_FILE, asdict(self))

    @classmethod
    def load(cls, hierarchy_dir: Path) -> DedupSummary:
        body = load_json(hierarchy_dir / DEDUP_FILE)
        return cls(
            int(body["duplicates_removed"]),
            int(body["duplicate_groups"]),
            {k: int(v) for k, v in body["removed_by_method"].items()},
            int(body["contaminated_removed"]),
            str(body["decontaminated_against"]),
            [_example(p) for p in body["pairs"]],
            [_example(p) for p in body["contaminated"]],
        )


def _example(row: Sequence[object]) -> ExamplePair:
    a, b, method, score = row
    return str(a), str(b), str(method), float(score)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EvalCopies:
    """The evaluation test images to decontaminate against: their copy features, keys, and the
    folder of their shard set (the report reads example images from it)."""

    features: CopyFeatures
    keys: Sequence[str]
    name: str


def _examples(
    pairs: Sequence[CopyPair], keys_a: Sequence[str], keys_b: Sequence[str], per_method: int
) -> list[ExamplePair]:
    """Up to ``per_method`` pairs of each method, as keys."""
    shown: list[ExamplePair] = []
    for method in METHODS:
        chosen = [p for p in pairs if p.method == method][:per_method]
        shown += [(keys_a[p.a], keys_b[p.b], p.method, p.score) for p in chosen]
    return shown


def remove_copies(
    copies: CopyFeatures | None,
    keys: Sequence[str],
    config: DedupConfig,
    evaluation: EvalCopies | None = None,
) -> tuple[np.ndarray | None, DedupSummary]:
    """The sorted rows to cluster (None = all, when dedup is off) and what was removed.

    Copies of evaluation images go first (every copy, not one per group), then duplicates among
    the rows left.
    """
    if not config.enabled:
        return None, DedupSummary()
    if copies is None:
        raise ValueError("dedup is enabled but no copy fingerprints were given")
    rule = config.rule()
    rows = np.arange(len(copies), dtype=np.int64)
    contaminated: list[CopyPair] = []
    if config.decontaminate and evaluation is not None:
        contaminated = find_copies_of(copies, evaluation.features, rule, progress=True)
        rows = np.setdiff1d(rows, [p.a for p in contaminated])
    # a view of the thumbnail memmap: the rows left are read a chunk at a time, never all at once
    subset = CopyFeatures(RowSubset(copies.thumbs, rows), copies.digests[rows], copies.small[rows])
    found = find_duplicates(subset, rule, progress=True)
    subset_keys = [keys[int(r)] for r in rows]
    summary = DedupSummary(
        duplicates_removed=found.removed["all"],
        duplicate_groups=found.groups,
        removed_by_method={m: found.removed[m] for m in METHODS},
        contaminated_removed=len(copies) - len(rows),
        decontaminated_against=evaluation.name if config.decontaminate and evaluation else "",
        pairs=_examples(found.pairs, subset_keys, subset_keys, config.examples),
        contaminated=_examples(contaminated, keys, evaluation.keys, config.examples)
        if evaluation
        else [],
    )
    return rows[found.keep], summary


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
            "contaminated_removed": self.dedup.contaminated_removed,
            **{f"duplicates_removed.{m}": v for m, v in self.dedup.removed_by_method.items()},
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
    copies: CopyFeatures | None,
    evaluation: EvalCopies | None = None,
    build: HierarchyBuilder | None = None,
) -> ClusteredPool:
    """Remove copies, build the hierarchy into ``out`` (replacing one built otherwise), write
    ``dedup.json``.

    Args:
        copies: the pool's copy features, row-aligned with ``embeddings`` (None with dedup off).
        evaluation: evaluation test images whose copies leave the pool (None = none known).

    Raises:
        HierarchyError: the hierarchy cannot be built on these rows (see ``build_hierarchy``).
    """
    if copies is not None and len(copies) != len(embeddings):
        raise HierarchyError(f"{len(copies)} copy fingerprints for {len(embeddings)} embeddings")
    started = time.perf_counter()
    rows, removed = remove_copies(copies, keys, dedup, evaluation)
    if build is None:
        hierarchy = build_hierarchy(embeddings, keys, out, config, rows=rows, overwrite=True)
    else:
        hierarchy = build(rows)
    removed.save(out)
    return ClusteredPool(hierarchy, removed, time.perf_counter() - started)
