"""kmeans_hierarchy on 2 torchrun ranks through Dagster Pipes equals the single-process build."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from sslflow.curation.hierarchy_store import load_hierarchy
from sslflow.pipelines.assets import curation, data, embeddings


@pytest.mark.slow  # two torchrun ranks each import torch, faiss and scikit-learn (~30 s)
def test_two_ranks_through_pipes_match_one_process(
    fmnist_subset: Any, resources: dict[str, object], sslflow_home: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    assets = [data.raw_shards, embeddings.embeddings, curation.kmeans_hierarchy]
    hierarchy = {"levels": [[20, 2, 5], [4, 1, 3]], "dedup": True}
    ops = {
        "raw_shards": {"config": {"source": "shards", "path": str(fmnist_subset.train.root)}},
        "embeddings": {"config": {"dim": 16, "pca_samples": 1000}},
        "kmeans_hierarchy": {"config": hierarchy},
    }
    assert dg.materialize(
        assets, instance=instance, resources=resources, run_config={"ops": ops}
    ).success
    single = load_hierarchy(sslflow_home / "kmeans_hierarchy")
    expected = [
        (single.centroids(i).copy(), np.load(single.level_dir(i) / "assignments.npy"))
        for i in range(2)
    ]

    shutil.rmtree(single.root)  # a complete hierarchy would be resumed, not rebuilt
    ops["kmeans_hierarchy"]["config"] = {**hierarchy, "processes": 2}
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets("kmeans_hierarchy"),
        instance=instance,
        resources=resources,
        run_config={"ops": {"kmeans_hierarchy": ops["kmeans_hierarchy"]}},
    )
    assert result.success
    distributed = load_hierarchy(sslflow_home / "kmeans_hierarchy")
    assert distributed.stats[0]["ranks"] == 2
    for level, (centroids, assignments) in enumerate(expected):
        np.testing.assert_allclose(distributed.centroids(level), centroids, atol=1e-4)
        np.testing.assert_array_equal(
            np.load(distributed.level_dir(level) / "assignments.npy"), assignments
        )
