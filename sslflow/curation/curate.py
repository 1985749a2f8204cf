"""The curated_index stage in plain Python: sample, summarise, write the report.

:func:`curate` draws the balanced sample (:mod:`sslflow.curation.sampling`), saves it, writes
``summary.json`` (the sample's balance, what dedup removed and, when labels exist, class
entropies, also of a seeded random subset of the same size for comparison: labels are only
measured, never used to select) and the HTML report with thumbnails and the rounds table
(:mod:`sslflow.curation.report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.curation.build import DedupSummary
from sslflow.curation.embedding_set import EmbeddingSet
from sslflow.curation.hierarchy_store import Hierarchy
from sslflow.curation.report import (
    ReportInputs,
    class_balance_sentence,
    class_shares,
    thumbnail_rows,
    write_report,
)
from sslflow.curation.report_pairs import copies_section, example_keys
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
    "class_entropy_random",
)

# |class_entropy_curated - class_entropy_random| below this reads as "unchanged"
BALANCE_TOLERANCE = 0.005

# summary.json's class-balance fields (with labels), shown in the report and asset metadata
CLASS_BALANCE_KEYS = (
    "class_entropy_pool",
    "class_entropy_curated",
    "class_entropy_random",
    "class_balance_vs_random",
    "smallest_class",
    "smallest_class_share_curated",
    "smallest_class_share_random",
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

    def class_balance(self) -> dict[str, Any]:
        """The summary's class-balance facts and their sentence (``class_balance``); empty
        without labels."""
        facts = {k: self.summary[k] for k in CLASS_BALANCE_KEYS if k in self.summary}
        sentence = class_balance_sentence(self.summary)
        return {**facts, "class_balance": sentence} if sentence else facts


def balance_verdict(curated: float, random: float) -> str:
    """``improved``, ``worsened`` or (within :data:`BALANCE_TOLERANCE`) ``unchanged``."""
    if abs(curated - random) < BALANCE_TOLERANCE:
        return "unchanged"
    return "improved" if curated > random else "worsened"


def summarise(
    curated: CuratedIndex,
    embeddings: EmbeddingSet,
    dedup: DedupSummary,
    min_top_entropy: float,
    pool_rows: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """The selection's balance, the check's threshold, duplicates removed, class entropies.

    With labels, the curated class balance is compared with that of a uniform random subset of
    the same size, drawn with ``seed`` from ``pool_rows`` (the embedding rows the hierarchy
    clustered, after dedup): ``class_balance_vs_random`` says whether curation improved it.
    """
    summary = {**curated.summary(), "min_top_entropy": min_top_entropy}
    summary["duplicates_removed"] = dedup.duplicates_removed
    labels = embeddings.labels()
    if (labels >= 0).any():  # labels are only measured, never used to select
        n_classes = int(labels.max()) + 1
        pool_shares, curated_shares = class_shares(labels, curated.rows, n_classes)
        size = min(len(curated.rows), len(pool_rows))
        random_rows = np.random.default_rng(seed).choice(pool_rows, size=size, replace=False)
        _, random_shares = class_shares(labels, random_rows, n_classes)
        summary["class_entropy_pool"] = normalised_entropy(pool_shares)
        summary["class_entropy_curated"] = normalised_entropy(curated_shares)
        summary["class_entropy_random"] = normalised_entropy(random_shares)
        summary["class_balance_vs_random"] = balance_verdict(
            summary["class_entropy_curated"], summary["class_entropy_random"]
        )
        present = np.flatnonzero(pool_shares > 0)
        smallest = int(present[np.argmin(pool_shares[present])])
        classes = embeddings.meta().get("classes") or []
        summary["smallest_class"] = (
            str(classes[smallest]) if smallest < len(classes) else str(smallest)
        )
        summary["smallest_class_share_curated"] = float(curated_shares[smallest])
        summary["smallest_class_share_random"] = float(random_shares[smallest])
    return summary


def report_images(
    hierarchy: Hierarchy,
    keys: Sequence[str],
    pool: Manifest,
    per_cluster: int,
    also: set[str],
) -> tuple[dict[int, list[Any]], dict[str, Any]]:
    """Thumbnails (the samples nearest each top-level centroid) and the images of ``also``
    (e.g. the copy examples), decoded in one pass over the shards."""
    chosen = thumbnail_rows(hierarchy, per_cluster)
    images = read_images(pool, {keys[r] for rows in chosen.values() for r in rows} | also)
    thumbs = {c: [images[keys[r]] for r in rows if keys[r] in images] for c, rows in chosen.items()}
    return thumbs, images


def _evaluation_images(dedup: DedupSummary, wanted: set[str]) -> dict[str, Any]:
    """The evaluation images of the contamination examples (none when their shards are gone)."""
    manifest = Path(dedup.decontaminated_against) / "manifest.json"
    if not wanted or not manifest.is_file():
        return {}
    return read_images(Manifest.load(manifest), wanted)


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
    summary = summarise(
        curated, embeddings, dedup, config.min_top_entropy, hierarchy.rows(), config.seed
    )
    save_json(out / "summary.json", summary)
    pool_keys, eval_keys = example_keys(dedup)
    thumbs, images = report_images(hierarchy, keys, pool, config.thumbnails, pool_keys)
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    copies = copies_section(dedup, images, _evaluation_images(dedup, eval_keys), report_dir)
    report = write_report(
        ReportInputs(
            hierarchy,
            curated,
            embeddings.labels(),
            embeddings.meta().get("classes"),
            thumbs,
            extra={
                "duplicates_removed": dedup.duplicates_removed,
                "contaminated_removed": dedup.contaminated_removed,
                **{k: summary[k] for k in CLASS_BALANCE_KEYS if k in summary},
            },
            rounds=[*earlier_rounds, this_round.row(summary)],
            class_balance=class_balance_sentence(summary),
            sections=[copies],
        ),
        report_dir,
    )
    return Curation(curated, summary, report)
