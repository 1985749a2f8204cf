"""Hierarchical k-means with resampling: storage, resumption, bad input, uniformity."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy, to_csr
from sslflow.curation.hierarchy_store import HierarchyError, load_hierarchy
from sslflow.curation.incremental import assign_new
from sslflow.curation.stats import normalised_entropy

CENTERS = np.array([[0, 0], [6, 0], [0, 6], [-6, 0], [0, -6]], dtype=np.float32)
SIZES = [4000, 400, 200, 100, 50]


def skewed_mixture(seed: int) -> np.ndarray:
    """Five unit Gaussians holding 4000, 400, 200, 100 and 50 points (a 80:1 skew)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [c + rng.normal(0, 1, (n, 2)) for c, n in zip(CENTERS, SIZES, strict=True)]
    ).astype(np.float32)


def keys_for(n: int) -> list[str]:
    return [f"s{i:06d}" for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1])
def test_resampling_spreads_centroids_over_the_modes(tmp_path: Path, seed: int) -> None:
    # statistic: normalised entropy of how many of the 50 centroids sit nearest each mode
    # (1 = as many centroids per mode). Plain k-means follows the density; resampling evens it.
    x = skewed_mixture(seed)
    scores = {}
    for steps in (0, 10):
        config = HierarchyConfig(levels=[(50, steps, 3)], seed=seed)
        hierarchy = build_hierarchy(x, keys_for(len(x)), tmp_path / f"h{steps}", config)
        centroids = hierarchy.centroids(0)
        nearest = np.argmin(((centroids[:, None] - CENTERS[None]) ** 2).sum(-1), axis=1)
        scores[steps] = normalised_entropy(np.bincount(nearest, minlength=len(CENTERS)))
    assert scores[10] >= scores[0] + 0.03, scores


def test_levels_storage_and_csr_round_trip(tmp_path: Path) -> None:
    x = skewed_mixture(0)
    config = HierarchyConfig(levels=[(40, 2, 5), (8, 1, 2)], seed=0)
    build_hierarchy(x, keys_for(len(x)), tmp_path, config)
    hierarchy = load_hierarchy(tmp_path)
    assert hierarchy.n_levels == 2 and hierarchy.dim == 2
    for level, k in enumerate((40, 8)):
        assignments = hierarchy.assignments(level)
        offsets, members = hierarchy.clusters(level)
        assert assignments.dtype == np.int32 and hierarchy.centroids(level).shape == (k, 2)
        assert offsets[-1] == len(members) == len(assignments) == (len(x) if level == 0 else 40)
        distances = hierarchy.distances(level)
        for cluster in range(k):
            part = members[offsets[cluster] : offsets[cluster + 1]]
            assert (assignments[part] == cluster).all()
            assert (np.diff(distances[part]) >= 0).all()  # sorted nearest first
        assert hierarchy.stats[level]["empty_clusters"] == 0
    rebuilt = to_csr(hierarchy.assignments(0), hierarchy.distances(0), 40)
    np.testing.assert_array_equal(rebuilt[0], hierarchy.clusters(0)[0])
    np.testing.assert_array_equal(rebuilt[1], hierarchy.clusters(0)[1])
    assert not any(p.suffix == ".pkl" for p in tmp_path.rglob("*"))
    paths = hierarchy.leaf_paths()
    np.testing.assert_array_equal(paths[:, 1], hierarchy.assignments(1))


def test_resume_after_interruption_between_levels_and_steps(tmp_path: Path) -> None:
    x = skewed_mixture(1)
    keys = keys_for(len(x))
    config = HierarchyConfig(levels=[(30, 3, 4), (6, 2, 2)], seed=2)
    build_hierarchy(x, keys, tmp_path / "full", config)
    reference = load_hierarchy(tmp_path / "full")
    target = tmp_path / "resumed"
    build_hierarchy(x, keys, target, config)
    level0_mtime = os.stat(target / "level_00" / "centroids.npy").st_mtime_ns
    # interrupted between levels: level 1 never finished
    for path in (target / "level_01").iterdir():
        if path.is_file():
            path.unlink()
    # and level 1 was interrupted after its resampling step 1
    (target / "level_01" / "steps" / "step_002.npy").unlink()
    build_hierarchy(x, keys, target, config)
    resumed = load_hierarchy(target)
    assert os.stat(target / "level_00" / "centroids.npy").st_mtime_ns == level0_mtime
    for level in range(2):
        np.testing.assert_array_equal(resumed.centroids(level), reference.centroids(level))
        np.testing.assert_array_equal(resumed.assignments(level), reference.assignments(level))


def test_bad_input_is_rejected_before_work(tmp_path: Path) -> None:
    x = skewed_mixture(0)[:100]
    keys = keys_for(100)
    with pytest.raises(HierarchyError, match="level 0 asks for 200 clusters but has only 100"):
        build_hierarchy(x, keys, tmp_path / "a", HierarchyConfig(levels=[(200, 0, 1)]))
    with pytest.raises(HierarchyError, match="strictly decreasing"):
        build_hierarchy(x, keys, tmp_path / "b", HierarchyConfig(levels=[(10, 0, 1), (10, 0, 1)]))
    with pytest.raises(HierarchyError, match="duplicate keys.*s000001"):
        build_hierarchy(x, ["s000001"] * 100, tmp_path / "c", HierarchyConfig(levels=[(5, 0, 1)]))
    bad = x.copy()
    bad[[3, 7]] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(HierarchyError, match="3 embedding rows hold NaN or inf.*s000003"):
        build_hierarchy(bad, keys, tmp_path / "d", HierarchyConfig(levels=[(5, 0, 1)]))
    assert not (tmp_path / "d").exists()  # nothing written
    dropped = build_hierarchy(
        bad, keys, tmp_path / "e", HierarchyConfig(levels=[(5, 0, 1)], drop_invalid=True)
    )
    assert len(dropped.rows()) == 97 and not np.isin([3, 7, 9], dropped.rows()).any()
    first = build_hierarchy(x, keys, tmp_path / "f", HierarchyConfig(levels=[(5, 0, 1)]))
    with pytest.raises(HierarchyError, match="dimension 2, these embeddings have 3"):
        build_hierarchy(
            np.zeros((100, 3), np.float32),
            keys,
            tmp_path / "f",
            HierarchyConfig(levels=[(5, 0, 1)]),
        )
    with pytest.raises(HierarchyError, match="other settings or data \\(data_sha256\\)"):
        build_hierarchy(x * 2, keys, tmp_path / "f", HierarchyConfig(levels=[(5, 0, 1)]))
    rebuilt = build_hierarchy(
        x * 2, keys, tmp_path / "f", HierarchyConfig(levels=[(5, 0, 1)]), overwrite=True
    )
    assert load_hierarchy(tmp_path / "f").config["data_sha256"] == rebuilt.config["data_sha256"]
    assert rebuilt.config["data_sha256"] != first.config["data_sha256"]


def test_incremental_assignment_and_drift(tmp_path: Path) -> None:
    x = skewed_mixture(0)
    hierarchy = build_hierarchy(
        x, keys_for(len(x)), tmp_path, HierarchyConfig(levels=[(20, 1, 5), (4, 0, 1)])
    )
    rng = np.random.default_rng(9)
    same = skewed_mixture(seed=5)[::16]  # a fresh draw of the same distribution: 297 rows
    shifted = (np.array([20, 20]) + rng.normal(0, 1, (300, 2))).astype(np.float32)
    near = assign_new(hierarchy, same)
    far = assign_new(hierarchy, shifted)
    centroids = hierarchy.centroids(0)
    expected = np.argmin(((same[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(near.paths[:, 0], expected)
    np.testing.assert_array_equal(near.paths[:, 1], hierarchy.assignments(1)[expected])
    assert near.leaf_counts.sum() == len(same)
    assert 0.7 < near.drift < 1.3 and far.drift > 10.0
    with pytest.raises(HierarchyError, match="dimension 3"):
        assign_new(hierarchy, np.zeros((4, 3), np.float32))


def test_geometry_follows_the_embedder_unless_set(tmp_path: Path) -> None:
    auto = HierarchyConfig(levels=[(5, 0, 1)])
    assert auto.for_embedder("pixels").spherical is False
    for model in ("efficientnet_lite0", "models:/sslflow-simclr/3", "/runs/backbone.pt"):
        assert auto.for_embedder(model).spherical is True
    assert HierarchyConfig(spherical=False).for_embedder("resnet18").spherical is False
    assert HierarchyConfig(spherical=True).for_embedder("pixels").spherical is True

    x = skewed_mixture(0)[:200] * np.linspace(1, 50, 200)[:, None]  # norms from 1 to 50
    keys = keys_for(200)
    cosine = build_hierarchy(x, keys, tmp_path / "c", auto.for_embedder("resnet18"))
    plain = build_hierarchy(x, keys, tmp_path / "e", auto)
    assert (cosine.geometry, plain.geometry) == ("cosine", "euclidean")
    assert load_hierarchy(tmp_path / "c").config["spherical"] is True
    assert np.allclose(np.linalg.norm(cosine.centroids(0), axis=1), 1, atol=1e-5)
    assert not np.array_equal(cosine.assignments(0), plain.assignments(0))
