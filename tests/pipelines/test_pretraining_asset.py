"""The pretrained_model asset in-process with MLflow on SQLite, and its torchrun/Pipes DDP path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch
from mlflow.tracking import MlflowClient

from sslflow.data import Manifest
from sslflow.models import load_backbone
from sslflow.pipelines.assets.data import raw_shards
from sslflow.pipelines.assets.pretraining import pretrained_model
from sslflow.pipelines.metadata import RUN_ID_KEY

TINY = {
    "backbone": "test_resnet",
    "small_stem": True,
    "image_size": 16,
    "batch_size": 32,
    "samples_per_epoch": 128,
    "epochs": 1,
    "max_steps": 4,
    "num_workers": 0,
    "checkpoint_every_n_steps": 2,
    "log_every_n_steps": 1,
    "warmup_epochs": 0.0,
}


def _materialise(
    fmnist_subset: Any, resources: dict[str, Any], pretrain: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    """raw_shards from the subset's shards, then pretrained_model, in one instance."""
    instance = dg.DagsterInstance.ephemeral()
    source = {"source": "shards", "path": str(fmnist_subset.train.root), "shard_size": 500}
    dg.materialize(
        [raw_shards],
        instance=instance,
        resources=resources,
        run_config={"ops": {"raw_shards": {"config": source}}},
    )
    return dg.materialize(
        [pretrained_model],
        instance=instance,
        resources=resources,
        run_config={"ops": {"pretrained_model": {"config": pretrain}}},
    )


def _images() -> torch.Tensor:
    return torch.randint(
        0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_asset_trains_logs_and_registers(
    fmnist_subset: Any, resources: dict[str, Any], sslflow_home: Path
) -> None:
    result = _materialise(fmnist_subset, resources, TINY)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["trained_on"].value == "raw_shards" and metadata["steps"].value == 4
    assert metadata["model_uri"].value == "models:/sslflow-simclr/1"  # pinned: the alias moves on
    assert metadata["model_alias_uri"].value == "models:/sslflow-simclr@current"
    assert (metadata["image_size"].value, metadata["in_chans"].value) == (16, 1)

    tracking = resources["mlflow"].resolved_uri()
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(metadata[RUN_ID_KEY].value)
    assert (
        run.data.tags["sslflow.upstream.raw_shards"]
        and run.data.params["backbone"] == "test_resnet"
    )
    (dataset,) = run.inputs.dataset_inputs  # MLflow's own lineage: the shards it trained on
    trained_on = Manifest.load(sslflow_home / "raw_shards")
    assert (
        dataset.dataset.name == "raw_shards"
        and dataset.dataset.digest == trained_on.content_hash[:36]
    )
    assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "training")]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    checkpoint = Path(metadata["checkpoint"].value)
    assert (
        hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        == run.data.tags["sslflow.checkpoint_sha256"]
    )

    registered = load_backbone("models:/sslflow-simclr@current", tracking_uri=tracking)
    on_disk = load_backbone(metadata["backbone_path"].value)
    assert type(registered.module) is type(on_disk.module)
    assert torch.equal(registered.embed(_images()), on_disk.embed(_images()))

    # Materialising again with the same config resumes the finished run: no new steps.
    again = _materialise(fmnist_subset, resources, TINY)
    meta = again.get_asset_materialization_events()[0].materialization.metadata
    assert meta["resumed_from_step"].value == 4 and meta["model_version"].value == "2"


def test_asset_without_shards_fails_clearly(resources: dict[str, Any]) -> None:
    with pytest.raises(dg.Failure, match="materialise raw_shards first"):
        dg.materialize(
            [pretrained_model],
            instance=dg.DagsterInstance.ephemeral(),
            resources=resources,
            run_config={"ops": {"pretrained_model": {"config": TINY}}},
        )


@pytest.mark.slow
def test_two_process_ddp_through_torchrun_and_pipes(
    fmnist_subset: Any, resources: dict[str, Any]
) -> None:
    config = {**TINY, "devices": 2, "accelerator": "cpu", "max_steps": 6, "samples_per_epoch": 256}
    result = _materialise(fmnist_subset, resources, config)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    client = MlflowClient(tracking_uri=resources["mlflow"].resolved_uri())
    runs = client.search_runs([client.get_experiment_by_name("sslflow").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        "pretrained_model",
        "raw_shards",
    ]  # one run per asset
    history = client.get_metric_history(metadata[RUN_ID_KEY].value, "loss")
    assert [m.step for m in history] == list(range(1, 7))
    run_dir = Path(metadata["backbone_path"].value).parent
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["rank_weight_max_diff"] == 0.0 and saved["config"]["devices"] == 2


def test_knn_monitor_needs_eval_split(sslflow_home: Path) -> None:
    from sslflow.pipelines.assets.pretraining import PretrainedModelConfig, knn_manifests
    from sslflow.pipelines.resources import SslflowHome

    home = SslflowHome(root=str(sslflow_home))
    config = PretrainedModelConfig(knn_monitor_every_n_epochs=1).pretrain_config()
    with pytest.raises(dg.Failure, match="materialise eval_split first"):
        knn_manifests(home, config)
    assert knn_manifests(home, PretrainedModelConfig().pretrain_config()) is None
