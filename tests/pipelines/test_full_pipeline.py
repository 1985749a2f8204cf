"""The whole graph in-process on a few thousand real images: MLflow runs, lineage, report,
staleness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from mlflow.tracking import MlflowClient

from sslflow.curation.embedding_set import load_embeddings
from sslflow.data import Manifest
from sslflow.pipelines.definitions import ASSETS, CHECKS
from sslflow.pipelines.metadata import RUN_ID_KEY
from sslflow.pipelines.resources import UPSTREAM_TAG

UNPARTITIONED = [a for a in ASSETS if a.partitions_def is None]

# Upstream MLflow runs each asset's run must name (its Dagster deps that open an MLflow run).
EXPECTED_UPSTREAM = {
    "embeddings": {"raw_shards"},
    "kmeans_hierarchy": {"raw_shards", "embeddings"},
    "curated_index": {"raw_shards", "embeddings", "kmeans_hierarchy"},
    "curated_shards": {"raw_shards", "curated_index"},
    "pretrained_model": {"curated_shards"},
    "probe_features": {"eval_split", "pretrained_model"},
    "knn_probe": {"probe_features"},
    "linear_probe": {"probe_features"},
    "probing_report": {"knn_probe", "linear_probe", "probe_features", "pretrained_model"},
}


def tiny_run_config(subset_root: Path) -> dict[str, Any]:
    return {
        "raw_shards": {"source": "shards", "path": str(subset_root / "train"), "shard_size": 500},
        "eval_split": {"source": "shards", "path": str(subset_root), "shard_size": 500},
        "embeddings": {"dim": 16, "pca_samples": 1000},
        "kmeans_hierarchy": {"levels": [[20, 1, 5], [4, 1, 3]], "dedup": False},
        "curated_index": {"target_size": 800, "min_top_entropy": 0.5},
        "curated_shards": {"shard_size": 400},
        "pretrained_model": {
            "epochs": 1,
            "samples_per_epoch": 256,
            "batch_size": 64,
            "num_workers": 0,
            "checkpoint_every_n_steps": 2,
        },
        "probe_features": {"batch_size": 500},
        "knn_probe": {"ks": [10, 20]},
        "linear_probe": {"probes": ["sgd"], "sgd_epochs": 2},
    }


def materialize(
    instance: dg.DagsterInstance, resources: dict[str, object], config: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*UNPARTITIONED, *CHECKS],
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": values} for name, values in config.items()}},
    )


def metadata_by_asset(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_full_graph_tracks_lineage_and_skips_unchanged_work(
    fmnist_subset: Any, resources: dict[str, object], sslflow_home: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    config = tiny_run_config(fmnist_subset.train.root.parent)
    first = materialize(instance, resources, config)
    assert first.success
    meta = metadata_by_asset(first)
    assert set(meta) == {a.key.to_user_string() for a in UNPARTITIONED}
    # Blocking and error checks pass; the kNN-beats-pixels check only warns (one tiny epoch here).
    assert all(
        c.passed or c.severity == dg.AssetCheckSeverity.WARN
        for c in first.get_asset_check_evaluations()
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    runs = {asset: client.get_run(str(values[RUN_ID_KEY])) for asset, values in meta.items()}
    for asset, run in runs.items():
        assert run.info.status == "FINISHED", asset
        assert run.data.tags["dagster.run_id"] == first.run_id and run.data.tags["git.commit"]
        upstream = {
            k.removeprefix(UPSTREAM_TAG): v
            for k, v in run.data.tags.items()
            if k.startswith(UPSTREAM_TAG)
        }
        assert EXPECTED_UPSTREAM.get(asset, set()) <= set(upstream), asset
        assert all(
            upstream[name] == runs[name].info.run_id for name in EXPECTED_UPSTREAM.get(asset, set())
        )

    report_run = runs["probing_report"]
    artifacts = {a.path for a in client.list_artifacts(report_run.info.run_id)}
    assert any(path.endswith(".html") or path == "report" for path in artifacts)
    assert runs["raw_shards"].data.tags["sslflow.shards_uri"].startswith("file://")
    assert runs["pretrained_model"].data.metrics["loss"] > 0

    second = materialize(instance, resources, config)
    assert second.success
    again = metadata_by_asset(second)
    for asset, values in again.items():
        assert values["reused_from_run"] == first.run_id, asset
        assert values[RUN_ID_KEY] == meta[asset][RUN_ID_KEY], asset
    assert len(client.search_runs([runs["raw_shards"].info.experiment_id])) == len(runs)

    # Iterative curation: round 1 embeds the pool with the model trained on round 0's curation.
    curation = ("embeddings", "kmeans_hierarchy", "curated_index", "curated_shards")
    round_one = {name: dict(config[name]) for name in curation}
    round_one["embeddings"]["embedder"] = "latest-model"
    result = dg.materialize(
        [*UNPARTITIONED, *CHECKS],
        selection=dg.AssetSelection.assets(*curation),
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": values} for name, values in round_one.items()}},
    )
    curated = metadata_by_asset(result)
    assert curated["embeddings"]["embedder"] == meta["pretrained_model"]["model_uri"]
    assert (
        curated["embeddings"]["curation_round"] == 1
        and curated["curated_index"]["curation_round"] == 1
    )
    report = (sslflow_home / "curated_index" / "report" / "index.html").read_text()
    rounds = report.split("<h2>Curation rounds</h2>", 1)[1].split("</table>", 1)[0]
    assert (
        rounds.count("<tr>") == 3
        and "<td>pixels</td>" in rounds
        and meta["pretrained_model"]["model_uri"] in rounds
    )
    assert meta["pretrained_model"]["model_uri"].endswith(
        "/1"
    )  # version-pinned, not the moving alias

    # Round 2: the model retrained on round 1's curation is version 2, and the pool is embedded
    # anew with it (the embedding cache keys on the model version, not on "latest-model").
    first_rows = np.array(np.load(sslflow_home / "embeddings" / "embeddings.npy", mmap_mode="r"))

    def run(selection: tuple[str, ...], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return metadata_by_asset(
            dg.materialize(
                [*UNPARTITIONED, *CHECKS],
                selection=dg.AssetSelection.assets(*selection),
                instance=instance,
                resources=resources,
                run_config={"ops": {name: {"config": values[name]} for name in selection}},
            )
        )

    model_v2 = run(("pretrained_model",), config)["pretrained_model"]["model_uri"]
    assert model_v2.endswith("/2")
    second = run(curation, round_one)
    assert (
        second["embeddings"]["embedder"] == model_v2 and second["embeddings"]["curation_round"] == 2
    )
    assert not np.array_equal(np.load(sslflow_home / "embeddings" / "embeddings.npy"), first_rows)


def test_inbox_partition_is_ingested_and_assigned_with_drift(
    fmnist_subset: Any, resources: dict[str, object], sslflow_home: Path
) -> None:
    from conftest import head
    from sslflow.data import write_shards
    from sslflow.data.datasets import digits, fashion_mnist
    from sslflow.pipelines.assets.inbox import inbox_partitions

    instance = dg.DagsterInstance.ephemeral()
    curation = ("raw_shards", "embeddings", "kmeans_hierarchy")
    config = {
        k: v for k, v in tiny_run_config(fmnist_subset.train.root.parent).items() if k in curation
    }
    built = dg.materialize(
        UNPARTITIONED,
        selection=dg.AssetSelection.assets(*curation),
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": values} for name, values in config.items()}},
    )
    assert built.success

    # Fashion-MNIST test images look like the pool; scikit-learn's digits do not.
    write_shards(
        head(fashion_mnist(split="test"), 300), sslflow_home / "inbox" / "similar", progress=False
    )
    write_shards(digits("test"), sslflow_home / "inbox" / "different", progress=False)
    instance.add_dynamic_partitions(inbox_partitions.name, ["similar", "different"])
    drift = {}
    for key in ("similar", "different"):
        result = dg.materialize(
            [a for a in ASSETS if a.partitions_def is not None],
            partition_key=key,
            instance=instance,
            resources=resources,
            run_config={"ops": {"inbox_assignment": {"config": {"drift_threshold": 1.5}}}},
        )
        meta = metadata_by_asset(result)
        assert meta["inbox_shards"]["samples"] == (300 if key == "similar" else 360)
        drift[key] = meta["inbox_assignment"]["drift"]
        assert meta["inbox_assignment"]["needs_recuration"] == (drift[key] > 1.5)
    assert drift["similar"] < 1.5 < drift["different"]

    # The re-curation that drift asks for curates the pool plus the ingested inbox partitions.
    pool = Manifest.load(sslflow_home / "raw_shards").total_samples
    recurated = dg.materialize(
        UNPARTITIONED,
        selection=dg.AssetSelection.assets(*curation),
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": values} for name, values in config.items()}},
    )
    assert (
        "reused_from_run" not in metadata_by_asset(recurated)["raw_shards"]
    )  # new inbox data is a new input
    grown = Manifest.load(sslflow_home / "raw_shards")
    assert grown.total_samples == pool + 300 + 360
    keys = load_embeddings(sslflow_home / "embeddings").keys()
    assert (
        sum(k.startswith("inbox-different-") for k in keys) == 360
        and len(keys) == grown.total_samples
    )
    assert grown.classes == Manifest.load(fmnist_subset.train.root).classes  # the pool's classes
