"""Balanced hierarchical sampling and near-duplicate removal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
from sslflow.curation.hierarchy_store import load_hierarchy
from sslflow.curation.sampling import allocate, sample_hierarchy


def test_allocate_fills_the_target_under_the_cap() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([100, 3, 50, 7, 20])
    alloc = allocate(sizes, 60, rng)
    # cap x = 16: 16 + 3 + 16 + 7 + 16 = 58 ≤ 60 < 62 (x = 17); the 2 left go to two of the
    # three children above the cap (sizes 100, 50, 20)
    assert alloc.sum() == 60
    np.testing.assert_array_equal(alloc[[1, 3]], [3, 7])
    assert sorted(alloc[[0, 2, 4]].tolist()) == [16, 17, 17]
    np.testing.assert_array_equal(allocate(sizes, 1000, rng), sizes)  # target above the total


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[str], Path]:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(c, 0.5, (n, 2)) for c, n in ((0, 1500), (5, 300), (10, 60))]
    ).astype(np.float32)
    keys = [f"k{i}" for i in range(len(x))]
    root = tmp_path_factory.mktemp("hier")
    build_hierarchy(x, keys, root, HierarchyConfig(levels=[(30, 1, 5), (5, 1, 2)], seed=1))
    return x, keys, root


def test_sampling_gives_exactly_n_with_caps_respected(
    hierarchy: tuple[np.ndarray, list[str], Path],
) -> None:
    _, keys, root = hierarchy
    tree = load_hierarchy(root)
    curated = sample_hierarchy(tree, keys, target=400, seed=3)
    assert len(curated.rows) == len(set(curated.rows.tolist())) == 400
    assert curated.keys == [keys[r] for r in curated.rows]
    for level, (counts, pool) in enumerate(zip(curated.counts, curated.pool_counts, strict=True)):
        assert counts.sum() == 400 and (counts <= pool).all()
    top, pool = curated.counts[-1], curated.pool_counts[-1]
    # water-filling at the top: clusters below the cap are taken whole, the others differ by ≤ 1
    cap = top[top < pool].max()
    assert (top[top < pool] >= cap - 1).all() and (
        top[pool <= cap - 1] == pool[pool <= cap - 1]
    ).all()
    np.testing.assert_array_equal(curated.paths[:, 0], tree.assignments(0)[curated.rows])
    np.testing.assert_array_equal(curated.paths[:, 1], tree.assignments(1)[curated.paths[:, 0]])
    again = sample_hierarchy(tree, keys, target=400, seed=3)
    np.testing.assert_array_equal(again.rows, curated.rows)
    summary = curated.summary()
    assert summary["entropy_top_curated"] > summary["entropy_top_pool"]


def test_leaf_strategies_pick_what_they_say(hierarchy: tuple[np.ndarray, list[str], Path]) -> None:
    _, keys, root = hierarchy
    tree = load_hierarchy(root)
    distances = tree.distances(0)
    offsets, members = tree.clusters(0)
    picks = {
        s: sample_hierarchy(tree, keys, target=300, strategy=s, seed=0)
        for s in ("closest", "farthest", "random")
    }
    for strategy in ("closest", "farthest"):
        chosen = set(picks[strategy].rows.tolist())
        for leaf in range(len(offsets) - 1):
            part = members[offsets[leaf] : offsets[leaf + 1]]
            taken = np.isin(part, list(chosen))
            count = int(taken.sum())
            expected = part[:count] if strategy == "closest" else part[len(part) - count :]
            np.testing.assert_array_equal(np.sort(part[taken]), np.sort(expected))
    assert distances[picks["closest"].rows].mean() < distances[picks["random"].rows].mean()
    assert distances[picks["random"].rows].mean() < distances[picks["farthest"].rows].mean()


def test_target_above_pool_returns_everything_with_a_warning(
    hierarchy: tuple[np.ndarray, list[str], Path],
) -> None:
    x, keys, root = hierarchy
    with pytest.warns(UserWarning, match="exceeds the pool"):
        curated = sample_hierarchy(load_hierarchy(root), keys, target=10**6)
    assert len(curated.rows) == len(x)
