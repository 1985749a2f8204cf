"""The curated_index stage in plain Python: sample, summarise, write the report.

:func:`curate` draws the balanced sample (:mod:`sslflow.curation.sampling`), saves it, writes
``summary.json`` (the sample's balance, what dedup removed and, when labels exist, class
entropies: labels are only measured, never used to select) and the HTML report with thumbnails
and the rounds table (:mod:`sslflow.curation.report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslflow.curation.build import DedupSummary
from sslflow.curation.embeddings import EmbeddingSet
from sslflow.curation.hierarchy_store import Hierarchy
from sslflow.curation.report import ReportInputs, class_shares, thumbnail_rows, write_report
from sslflow.curation.sampling import CuratedIndex, LeafStrategy, sample_hierarchy
from sslflow.curation.shards import read_images
from sslflow.curation.stats import normalised_entropy, size_quantiles
from sslflow.curation.storage import save_json
from sslflow.data import Manifest

ROUND_METRICS = (
    "selected",
    "entropy_top_pool",
    "entropy_top_curated",
    "class_entropy_pool",
    "class_entropy_curated",
)


@dataclass(frozen=True)
class SamplingConfig:
    """Balanced hierarchical sampling (see ``sslflow.curation.sampling``) and its report.

    Attributes:
        target_size: samples to select (the whole pool, with a warning, if larger)
        strategy: inside a leaf cluster: random, closest or farthest to its centroid
        seed: seeds the remainder draws and random leaf picks
        min_top_entropy: asset check: minimum normalised entropy of curated counts over
            top-level clusters
        thumbnails: report: thumbnails per top-level cluster (nearest samples to its centroid)
    """

    target_size: int = 20_000
    strategy: str = "random"
    seed: int = 0
    min_top_entropy: float = 0.9
    thumbnails: int = 3

    def leaf_strategy(self) -> LeafStrategy:
        """The strategy, checked before any work.

        Raises:
            ValueError: not one of random, closest, farthest.
        """
        try:
            return LeafStrategy(self.strategy)
        except ValueError as exc:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; valid: random, closest, farthest"
            ) from exc


@dataclass(frozen=True)
class CurationRound:
    """Which round of the curate → pretrain loop this is, and the embedder it curated with."""

    number: int
    embedder: str

    def row(self, values: dict[str, Any]) -> dict[str, Any]:
        """This round's row of the rounds table, from a summary or a run's metrics."""
        return {
            "round": self.number,
            "embedder": self.embedder,
            **{k: values[k] for k in ROUND_METRICS if k in values},
        }


@dataclass(frozen=True)
class Curation:
    """The saved selection, its summary (also ``summary.json``) and the report's HTML page."""

    curated: CuratedIndex
    summary: dict[str, Any]
    report: Path

    def metrics(self) -> dict[str, float]:
        """The summary's numbers plus curated leaf-size quantiles, as MLflow metrics."""
        metrics = {k: float(v) for k, v in self.summary.items() if isinstance(v, int | float)}
        quantiles = size_quantiles(self.curated.counts[0])
        metrics.update({f"curated_leaf_size_{k}": v for k, v in quantiles.items()})
        return metrics


def summarise(
    curated: CuratedIndex, embeddings: EmbeddingSet, dedup: DedupSummary, min_top_entropy: float
) -> dict[str, Any]:
    """The selection's balance, the check's threshold, duplicates removed, class entropies."""
    summary = {**curated.summary(), "min_top_entropy": min_top_entropy}
    summary["duplicates_removed"] = dedup.duplicates_removed
    labels = embeddings.labels()
    if (labels >= 0).any():  # labels are only measured, never used to select
        pool_shares, curated_shares = class_shares(labels, curated.rows, int(labels.max()) + 1)
        summary["class_entropy_pool"] = normalised_entropy(pool_shares)
        summary["class_entropy_curated"] = normalised_entropy(curated_shares)
    return summary


def thumbnails(
    hierarchy: Hierarchy, keys: Sequence[str], pool: Manifest, per_cluster: int
) -> dict[int, list[Any]]:
    """Decoded images of the samples nearest each top-level centroid (one pass over shards)."""
    chosen = thumbnail_rows(hierarchy, per_cluster)
    images = read_images(pool, {keys[r] for rows in chosen.values() for r in rows})
    return {c: [images[keys[r]] for r in rows if keys[r] in images] for c, rows in chosen.items()}


def curate(
    hierarchy: Hierarchy,
    embeddings: EmbeddingSet,
    pool: Manifest,
    out: Path,
    config: SamplingConfig,
    this_round: CurationRound,
    earlier_rounds: Sequence[dict[str, Any]] = (),
) -> Curation:
    """Sample ``config.target_size`` points into ``out`` with ``summary.json`` and ``report/``.

    Args:
        hierarchy: the complete hierarchy (its folder holds ``dedup.json``).
        embeddings: the embeddings it was built from (keys, labels, class names).
        pool: the pool's shards, for the thumbnails.
        out: the curated index folder.
        config: sampling and report settings.
        this_round: the curation round, shown in the rounds table.
        earlier_rounds: rows of earlier rounds (:meth:`CurationRound.row`), oldest first.

    Raises:
        ValueError: an unknown strategy or a target size below 1.
    """
    strategy = config.leaf_strategy()
    keys = embeddings.keys()
    curated = sample_hierarchy(hierarchy, keys, config.target_size, strategy, config.seed)
    curated.save(out)
    dedup = DedupSummary.load(hierarchy.root)
    summary = summarise(curated, embeddings, dedup, config.min_top_entropy)
    save_json(out / "summary.json", summary)
    report = write_report(
        ReportInputs(
            hierarchy,
            curated,
            embeddings.labels(),
            embeddings.meta().get("classes"),
            thumbnails(hierarchy, keys, pool, config.thumbnails),
            extra={"duplicates_removed": dedup.duplicates_removed},
            rounds=[*earlier_rounds, this_round.row(summary)],
        ),
        out / "report",
    )
    return Curation(curated, summary, report)
