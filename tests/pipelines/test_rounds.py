"""The curation loop from the shell and from its schedule, on a folder of real photos."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from photo_folder import build_photo_folder
from sslflow.cli.main import main
from sslflow.pipelines.resources import SslflowHome
from sslflow.pipelines.rounds import ROUND_TAG
from sslflow.pipelines.schedules import weekly_curation_round

TRAINING = [
    "--backbone",
    "test_resnet",
    "--max-steps",
    "2",
    "--batch-size",
    "16",
    "--samples-per-epoch",
    "32",
    "--num-workers",
    "0",
]
CURATION = ["--set", "curated_index.target_size=40", "--set", "curated_index.min_top_entropy=0"]


def _materializations(instance: dg.DagsterInstance, asset: str) -> list[dict[str, object]]:
    """Metadata of every materialisation of ``asset``, oldest first."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return [
        {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in reversed(records)
        if r.asset_materialization is not None
    ]


def test_rounds_pretrain_on_the_pool_then_curate_with_each_rounds_model(
    tmp_path: Path, sslflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(sslflow_home / "dagster"))
    pool = build_photo_folder(tmp_path / "photos", per_class=12, seed=3)
    home = ["--home", str(sslflow_home)]
    assert main(["ingest", "--source", "image-folder", "--path", str(pool.root), *home]) == 0
    instance_home = {"home": SslflowHome(root=str(sslflow_home))}
    skipped = weekly_curation_round(
        dg.build_schedule_context(instance=dg.DagsterInstance.get(), resources=instance_home)
    )
    assert isinstance(skipped, dg.SkipReason) and "round 0" in str(skipped.skip_message)

    assert main(["rounds", "--rounds", "2", *TRAINING, *CURATION, *home]) == 0

    instance = dg.DagsterInstance.get()
    models = _materializations(instance, "pretrained_model")
    assert [m["trained_on"] for m in models] == ["raw_shards", "curated_shards", "curated_shards"]
    embedded = _materializations(instance, "embeddings")
    # each round embeds with the model the round before it trained, pinned to its version
    assert [e["embedder"] for e in embedded] == [m["model_uri"] for m in models[:2]]
    assert [e["curation_round"] for e in embedded] == [1, 2]
    assert [c["curation_round"] for c in _materializations(instance, "curated_index")] == [1, 2]
    runs = instance.get_run_records(dg.RunsFilter(tags={ROUND_TAG: "2"}))
    assert len(runs) == 1 and runs[0].dagster_run.is_success

    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sslflow").experiment_id
    curated = client.search_runs([experiment], "tags.`sslflow.stage` = 'curated_index'")
    assert sorted(r.data.tags["sslflow.curation_round"] for r in curated) == ["1", "2"]

    # the schedule requests the next round with the loop's fields over the home's settings
    request = weekly_curation_round(
        dg.build_schedule_context(instance=instance, resources=instance_home)
    )
    assert isinstance(request, dg.RunRequest) and request.tags[ROUND_TAG] == "3"
    ops = request.run_config["ops"]
    assert ops["embeddings"]["config"]["embedder"] == "latest-model"
    assert ops["pretrained_model"]["config"]["data"] == "curated_shards"
    assert ops["pretrained_model"]["config"]["backbone"] == "test_resnet"


def test_rounds_refuse_a_setting_the_loop_overrides(
    sslflow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(sslflow_home / "dagster"))
    argv = ["rounds", "--set", "embeddings.embedder=pixels", "--home", str(sslflow_home)]
    assert main(argv) == 1
    assert (
        "embeddings.embedder='pixels' conflicts with the curation loop" in capsys.readouterr().err
    )
