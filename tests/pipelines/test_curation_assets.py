"""In-process materialisation of the curation assets with MLflow on SQLite."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
from mlflow.tracking import MlflowClient

from sslflow.curation.build import DedupSummary
from sslflow.data import Manifest, write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist
from sslflow.pipelines.assets import curation, data, embeddings

SMALL = {
    "embeddings": {"dim": 16, "pca_samples": 500, "chunk_size": 512},
    "kmeans_hierarchy": {"levels": [[40, 2, 5], [8, 1, 3]], "max_iter": 20},
    "curated_index": {"target_size": 500, "min_top_entropy": 0.8, "thumbnails": 2},
    "curated_shards": {"shard_size": 200},
}


def _runs(home: Path) -> dict[str, object]:
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sslflow")
    runs = client.search_runs([experiment.experiment_id])
    return {run.data.tags["sslflow.stage"]: run for run in runs}


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_curation_assets_materialise_in_process(
    fmnist_subset, resources, sslflow_home: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    raw = dg.materialize(
        [data.raw_shards],
        instance=instance,
        resources=resources,
        run_config={
            "ops": {
                "raw_shards": {
                    "config": {"source": "shards", "path": str(fmnist_subset.train.root)}
                }
            }
        },
    )
    assert raw.success
    assets = dg.load_assets_from_modules([embeddings, curation])
    result = dg.materialize(
        [*assets, *dg.load_asset_checks_from_modules([embeddings, curation]), data.raw_shards],
        selection=[a.key for a in assets],
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": cfg} for name, cfg in SMALL.items()}},
    )
    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "embeddings_finite": True,
        "kmeans_no_empty_leaf": True,
        "curated_top_entropy": True,
    }

    curated = Manifest.load(sslflow_home / "curated_shards" / "manifest.json")
    assert curated.total_samples == 500 and curated.classes == fmnist_subset.train.classes
    keys = (sslflow_home / "curated_index" / "keys.txt").read_text().splitlines()
    assert len(keys) == 500 and set(keys) <= {f"fmnist-train-{i:06d}" for i in range(2000)}
    paths = np.load(sslflow_home / "curated_index" / "paths.npy")
    assert paths.shape == (500, 2)
    assert (sslflow_home / "curated_index" / "report" / "index.html").is_file()

    runs = _runs(sslflow_home)
    assert set(runs) >= {
        "raw_shards",
        "embeddings",
        "kmeans_hierarchy",
        "curated_index",
        "curated_shards",
    }
    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    emb = runs["embeddings"]
    assert emb.data.metrics["rows"] == 2000 and emb.data.metrics["dim"] == 16
    assert len(emb.data.tags["sslflow.embeddings_sha256"]) == 64
    assert emb.data.tags["sslflow.upstream.raw_shards"] == runs["raw_shards"].info.run_id
    hier = runs["kmeans_hierarchy"]
    assert hier.data.metrics["level_0.inertia"] > hier.data.metrics["level_1.inertia"] > 0
    assert hier.data.metrics["level_0.empty_clusters"] == 0
    assert (
        "duplicates_removed" in hier.data.metrics
        and hier.data.params["levels"] == "[[40, 2, 5], [8, 1, 3]]"
    )
    assert (hier.data.params["geometry"], hier.data.params["embedder"]) == ("euclidean", "pixels")
    report = (sslflow_home / "curated_index" / "report" / "index.html").read_text()
    assert "Geometry: euclidean." in report
    assert {"level_00/centroids.npy", "level_01/stats.json", "summary.json"} <= _artifacts(
        client, hier.info.run_id
    )
    index = runs["curated_index"]
    metrics = index.data.metrics
    assert metrics["selected"] == 500
    assert metrics["entropy_top_curated"] >= metrics["entropy_top_pool"]
    assert metrics["curated_leaf_size_max"] >= metrics["curated_leaf_size_min"] > 0
    assert {"report/index.html", "report/treemap.png", "report/class_shares.png"} <= _artifacts(
        client, index.info.run_id
    )
    shards = runs["curated_shards"]
    assert shards.data.metrics["samples"] == 500
    assert shards.data.tags["sslflow.upstream.curated_index"] == index.info.run_id


def test_copies_of_evaluation_images_leave_the_pool_and_show_in_the_report(
    fmnist_subset, resources, sslflow_home: Path, tmp_path: Path
) -> None:
    """eval_split's test images planted in the raw pool (10 exact, 10 shifted by 1 px) are
    removed before clustering, counted in dedup.json and shown in the report."""
    train, test = fashion_mnist(split="train"), fashion_mnist(split="test")
    planted = [test.images[i] for i in range(10)]
    planted += [np.roll(test.images[i], 1, axis=1) for i in range(10, 20)]
    images = np.concatenate([train.images[:600], np.stack(planted)])
    labels = np.concatenate([train.labels[:600], test.labels[:20]])
    pool = ArraySource("pool", images, labels, "pool", {"test": "decontamination"}, train.classes)
    write_shards(pool, tmp_path / "pool", shard_size=400, progress=False)
    selected = [data.raw_shards, data.eval_split, embeddings.embeddings, curation.kmeans_hierarchy]
    selected.append(curation.curated_index)
    config = {
        "raw_shards": {"source": "shards", "path": str(tmp_path / "pool")},
        "eval_split": {"source": "shards", "path": str(fmnist_subset.train.root.parent)},
        "embeddings": SMALL["embeddings"],
        "kmeans_hierarchy": {"levels": [[20, 1, 5], [4, 1, 3]], "max_iter": 10},
        "curated_index": {"target_size": 200, "min_top_entropy": 0.5, "thumbnails": 1},
    }
    result = dg.materialize(
        selected,
        instance=dg.DagsterInstance.ephemeral(),
        resources=resources,
        run_config={"ops": {name: {"config": cfg} for name, cfg in config.items()}},
    )
    assert result.success
    dedup = DedupSummary.load(sslflow_home / "kmeans_hierarchy")
    removed = {a for a, _, _, _ in dedup.contaminated}
    assert dedup.contaminated_removed >= 20
    assert removed and removed <= {f"pool-{600 + i:06d}" for i in range(20)}
    rows = set(np.load(sslflow_home / "kmeans_hierarchy" / "rows.npy").tolist())
    assert not rows & set(range(600, 620))
    report = sslflow_home / "curated_index" / "report"
    assert (report / "eval_copies.png").is_file()
    assert "copies of evaluation images" in (report / "index.html").read_text()
