"""The curated_index summary: class balance against a random subset of the same size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslflow.curation.build import DedupSummary
from sslflow.curation.curate import BALANCE_TOLERANCE, balance_verdict, summarise
from sslflow.curation.embedding_set import EmbeddingSet
from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
from sslflow.curation.hierarchy_store import Hierarchy, load_hierarchy
from sslflow.curation.report import class_balance_sentence
from sslflow.curation.sampling import sample_hierarchy
from sslflow.curation.stats import normalised_entropy
from sslflow.curation.storage import save_json, save_lines, save_npy

SIZES = (1500, 300, 60)  # three blobs, one class each: the pool is skewed by class


def _pool(root: Path, labels: np.ndarray, x: np.ndarray) -> tuple[EmbeddingSet, Hierarchy]:
    """An embeddings folder over ``x`` with ``labels``, and a hierarchy of all rows but the
    last five (as if dedup had dropped them)."""
    keys = [f"k{i}" for i in range(len(x))]
    save_npy(root / "emb" / "embeddings.npy", x.astype(np.float16))
    save_npy(root / "emb" / "labels.npy", labels.astype(np.int64))
    save_lines(root / "emb" / "keys.txt", keys)
    save_json(root / "emb" / "meta.json", {"classes": ["big", "middle", "small"]})
    config = HierarchyConfig(levels=[(30, 1, 5), (5, 1, 2)], seed=1)
    build_hierarchy(x, keys, root / "hier", config, rows=np.arange(len(x) - 5))
    return EmbeddingSet(root / "emb"), load_hierarchy(root / "hier")


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three 2-D blobs of very different sizes, labelled by blob."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.5, (n, 2)) for c, n in zip((0, 5, 10), SIZES, strict=True)])
    return x.astype(np.float32), np.repeat(np.arange(3), SIZES)


def test_class_balance_improves_against_a_random_subset(
    blobs: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, labels = blobs
    embeddings, hierarchy = _pool(tmp_path, labels, x)
    assert len(hierarchy.rows()) == len(x) - 5  # the random subset is drawn from these
    curated = sample_hierarchy(hierarchy, embeddings.keys(), target=400, seed=3)
    summary = summarise(curated, embeddings, DedupSummary(5), 0.9, hierarchy.rows(), seed=3)

    # the seeded uniform draw of 400 from the clustered rows, recomputed from its definition
    drawn = np.random.default_rng(3).choice(hierarchy.rows(), size=400, replace=False)
    shares = np.bincount(labels[drawn], minlength=3) / 400
    assert summary["class_entropy_random"] == pytest.approx(normalised_entropy(shares))
    assert summary["class_entropy_random"] == pytest.approx(summary["class_entropy_pool"], abs=0.05)
    assert summary["class_entropy_curated"] > summary["class_entropy_random"] + 0.1
    assert summary["class_balance_vs_random"] == "improved"
    # the pool's smallest class (60 of 1,860 rows) gains share
    assert summary["smallest_class"] == "small"
    curated_small = float(np.mean(labels[curated.rows] == 2))
    assert summary["smallest_class_share_curated"] == pytest.approx(curated_small)
    assert summary["smallest_class_share_random"] == pytest.approx(shares[2])
    assert summary["smallest_class_share_curated"] > 2 * summary["smallest_class_share_random"]

    again = summarise(curated, embeddings, DedupSummary(5), 0.9, hierarchy.rows(), seed=3)
    assert again == summary  # seeded: the same numbers every time
    sentence = class_balance_sentence(summary)
    assert sentence is not None and sentence.startswith(
        "Class balance improved against a random subset of the same size: normalised class "
        f"entropy {summary['class_entropy_curated']:.3f} vs {summary['class_entropy_random']:.3f}"
    )
    assert f"smallest class (small) share {summary['smallest_class_share_curated']:.1%}" in sentence


def test_class_balance_worsens_when_clusters_cut_across_classes(
    blobs: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Two balanced classes, one of which owns the two small blobs: balancing the clusters
    over-samples those blobs, so the curated classes are less balanced than a random subset's."""
    x, _ = blobs
    labels = np.zeros(len(x), dtype=np.int64)
    labels[np.random.default_rng(1).permutation(SIZES[0])[:570]] = 1
    labels[SIZES[0] :] = 1  # 930 vs 930
    embeddings, hierarchy = _pool(tmp_path, labels, x)
    curated = sample_hierarchy(hierarchy, embeddings.keys(), target=400, seed=0)
    summary = summarise(curated, embeddings, DedupSummary(5), 0.9, hierarchy.rows())
    assert summary["class_balance_vs_random"] == "worsened"
    assert summary["class_entropy_curated"] < summary["class_entropy_random"] - BALANCE_TOLERANCE
    sentence = class_balance_sentence(summary)
    assert sentence is not None and sentence.startswith("Class balance worsened")


def test_no_labels_no_class_fields(blobs: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, _ = blobs
    embeddings, hierarchy = _pool(tmp_path, np.full(len(x), -1), x)
    curated = sample_hierarchy(hierarchy, embeddings.keys(), target=400)
    summary = summarise(curated, embeddings, DedupSummary(), 0.9, hierarchy.rows())
    assert not any(k.startswith(("class_", "smallest_class")) for k in summary)
    assert class_balance_sentence(summary) is None


def test_balance_verdict_has_a_tolerance() -> None:
    assert balance_verdict(0.800, 0.800 + BALANCE_TOLERANCE / 2) == "unchanged"
    assert balance_verdict(0.800, 0.790) == "improved"
    assert balance_verdict(0.790, 0.800) == "worsened"
