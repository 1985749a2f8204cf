"""``levels: auto`` (levels sized to the pool), explicit levels, and the small-cluster warning."""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from sslflow.curation.distributed import launch_arguments
from sslflow.curation.hierarchical import HierarchyConfig, Level, build_hierarchy
from sslflow.curation.hierarchy_store import HierarchyError, load_hierarchy
from sslflow.curation.levels import AUTO, auto_levels, check_levels
from sslflow.curation.storage import load_json

SIZES = [1, 2, 3, 10, 100, 500, 2019, 16_380, 60_000, 1_000_000, 743_000_000]


def keys_for(n: int) -> list[str]:
    return [f"s{i:06d}" for i in range(n)]


def blobs(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points around 20 Gaussian centres in 8-D."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (20, 8))
    return (centres[rng.integers(0, 20, n)] + rng.normal(0, 1, (n, 8))).astype(np.float32)


@pytest.mark.parametrize("n", SIZES)
def test_auto_levels_fit_any_pool(n: int) -> None:
    levels = auto_levels(n)
    check_levels(levels, n)  # buildable: k fits the rows, strictly decreasing
    k = [level.n_clusters for level in levels]
    assert 1 <= len(levels) <= 4
    assert all(8 <= finer / coarser <= 12 for finer, coarser in itertools.pairwise(k))
    assert len(levels) == 1 or k[-1] >= 10  # a top level keeps enough clusters to balance over
    assert n // k[0] >= 2 or n == 1  # never fewer than 2 points per level-0 cluster on average
    if n >= 300:
        assert 120 <= n / k[0] <= 180  # ~150 points per level-0 cluster
    assert [(lv.n_resampling_steps, lv.sample_size) for lv in levels] == [(3, 15)] + [(3, 5)] * (
        len(levels) - 1
    )


def test_auto_levels_examples_of_the_docs() -> None:
    examples = {
        2019: [(13, 3, 15)],
        16_380: [(109, 3, 15), (11, 3, 5)],
        60_000: [(400, 3, 15), (40, 3, 5)],
        1_000_000: [(6667, 3, 15), (667, 3, 5), (67, 3, 5)],
    }
    for n, expected in examples.items():
        assert auto_levels(n) == tuple(Level(*level) for level in expected), n
    ks = [auto_levels(n)[0].n_clusters for n in SIZES]
    assert ks == sorted(ks)  # more points, more level-0 clusters
    with pytest.raises(HierarchyError, match="no rows"):
        auto_levels(0)


def test_config_defaults_to_auto_and_parses_both_forms() -> None:
    config = HierarchyConfig()
    assert config.levels == AUTO and hash(config) == hash(HierarchyConfig(levels="Auto "))
    explicit = HierarchyConfig(levels=[[40, 2, 5], [8, 1, 3]])
    assert explicit.levels == (Level(40, 2, 5), Level(8, 1, 3)) and hash(explicit)
    for bad in ("atuo", 7, [[40, 2]], [["a", 1, 2]]):
        with pytest.raises(HierarchyError, match=r'levels: expected "auto" .* e\.g\.'):
            HierarchyConfig(levels=bad)  # type: ignore[arg-type]


def test_build_resolves_auto_against_the_rows_clustered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = blobs(4000)
    rows = np.arange(500, 4000)  # e.g. what deduplication kept: 3,500 rows
    expected = auto_levels(len(rows))
    assert expected != auto_levels(len(x))
    with caplog.at_level(logging.WARNING, logger="sslflow.curation"):
        built = build_hierarchy(x, keys_for(len(x)), tmp_path, HierarchyConfig(seed=0), rows=rows)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    saved = load_json(tmp_path / "config.json")
    assert saved["levels"] == [asdict(level) for level in expected] == built.config["levels"]
    summary = load_json(tmp_path / "summary.json")
    assert summary["auto_levels"] is True
    assert [s["n_clusters"] for s in summary["levels"]] == [lv.n_clusters for lv in expected]
    hierarchy = load_hierarchy(tmp_path)
    assert hierarchy.n_levels == len(expected) and len(hierarchy.rows()) == len(rows)
    assert hierarchy.stats[0]["sizes"]["p50"] >= 20
    # the same auto config resolves alike, so the complete build is resumed, not refused
    again = build_hierarchy(x, keys_for(len(x)), tmp_path, HierarchyConfig(seed=0), rows=rows)
    assert again.config == built.config
    # explicit levels equal to the resolved ones are the same build
    explicit = HierarchyConfig(levels=expected, seed=0)
    assert build_hierarchy(x, keys_for(len(x)), tmp_path, explicit, rows=rows).config == saved


def test_two_levels_on_fifteen_thousand_points(tmp_path: Path) -> None:
    x = blobs(15000, seed=1)
    built = build_hierarchy(x, keys_for(len(x)), tmp_path, HierarchyConfig(seed=0))
    assert [s["n_clusters"] for s in built.stats] == [100, 10]
    assert load_json(tmp_path / "config.json")["levels"][1] == asdict(Level(10, 3, 5))


def test_small_clusters_warn_naming_the_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = blobs(400)
    with caplog.at_level(logging.WARNING, logger="sslflow.curation.hierarchical"):
        # 300 clusters on 400 points: most level-0 clusters hold one point
        build_hierarchy(x, keys_for(400), tmp_path / "a", HierarchyConfig(levels=[(300, 0, 1)]))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.name == "sslflow.curation.hierarchical"
    message = record.getMessage()
    assert "level 0 (k=300" in message and "median cluster holds 1" in message
    assert "levels: auto (here [[3, 3, 15]])" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sslflow.curation.hierarchical"):
        # level 1 clusters 40 centroids into 30: one child per cluster
        config = HierarchyConfig(levels=[(40, 1, 5), (30, 0, 1)])
        build_hierarchy(x, keys_for(400), tmp_path / "b", config)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and messages[0].startswith("level 1 (k=30 on 40 rows)")
    assert "n_clusters ≤ 4 at this level, or levels: auto" in messages[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sslflow.curation.hierarchical"):
        build_hierarchy(x, keys_for(400), tmp_path / "c", HierarchyConfig(levels=[(20, 1, 5)]))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_distributed_launch_keeps_auto_for_the_ranks(tmp_path: Path) -> None:
    for levels in ("auto", [[40, 2, 5], [8, 1, 3]]):
        config = HierarchyConfig(levels=levels, seed=3)
        launch_arguments(tmp_path / "emb", tmp_path / "out", config, None, tmp_path / "launch")
        body = load_json(tmp_path / "launch" / "config.json")
        assert body["levels"] == levels
        assert HierarchyConfig(**body) == config  # what every rank rebuilds (main)


def test_dagster_config_takes_auto_or_lists_and_names_the_field() -> None:
    from pydantic import ValidationError

    from sslflow.pipelines.assets.curation import KMeansHierarchyConfig

    assert KMeansHierarchyConfig().levels == AUTO
    assert KMeansHierarchyConfig().hierarchy_config("pixels").levels == AUTO
    explicit = KMeansHierarchyConfig(levels=[[40, 2, 5], [8, 1, 3]])
    assert explicit.model_dump()["levels"] == [[40, 2, 5], [8, 1, 3]]
    assert explicit.hierarchy_config("pixels").levels == (Level(40, 2, 5), Level(8, 1, 3))
    with pytest.raises(ValidationError, match=r'kmeans_hierarchy\.levels: expected "auto"'):
        KMeansHierarchyConfig(levels="bogus")
