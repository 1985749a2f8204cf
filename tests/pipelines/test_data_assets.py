"""raw_shards and eval_split materialised in-process, each with its MLflow run on SQLite."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from sslflow.data import Manifest
from sslflow.pipelines.assets.data import eval_split, raw_shards
from sslflow.pipelines.definitions import defs
from sslflow.pipelines.metadata import RUN_ID_KEY


def materialize(
    resources: dict[str, object], run_config: dict[str, object]
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_shards, eval_split],
        instance=dg.DagsterInstance.ephemeral(),
        resources=resources,
        run_config={"ops": run_config},
    )


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def test_definitions_load() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_shards", "eval_split"} <= keys


def test_raw_shards_and_eval_split_are_tracked_in_mlflow(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    result = materialize(
        resources,
        {
            "raw_shards": {"config": {"source": "digits", "split": "all", "shard_size": 500}},
            "eval_split": {"config": {"source": "digits", "shard_size": 500}},
        },
    )
    assert result.success
    raw = metadata_of(result, "raw_shards")
    assert (
        raw["samples"] == 1797
        and raw["shards"] == 4
        and "| shard-000000.tar | 500 |" in str(raw["first_shards"])
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    run = client.get_run(str(raw[RUN_ID_KEY]))
    assert run.data.params["source"] == "digits" and run.data.params["shard_size"] == "500"
    assert run.data.metrics["samples"] == 1797 and run.data.metrics["shards"] == 4
    assert run.data.metrics["skipped"] == 0 and run.data.metrics["bytes"] > 0
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.asset_key"] == "raw_shards" and run.data.tags["git.commit"]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "raw_shards")]
    assert artifacts == ["raw_shards/manifest.json"]
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(sslflow_home)

    split = metadata_of(result, "eval_split")
    train = Manifest.load(sslflow_home / "eval_split" / "train")
    test = Manifest.load(sslflow_home / "eval_split" / "test")
    assert (train.total_samples, test.total_samples) == (1437, 360) and train.labelled
    assert split["train_samples"] == 1437 and split["test_samples"] == 360
    eval_run = client.get_run(str(split[RUN_ID_KEY]))
    assert (
        eval_run.data.metrics["train.samples"] == 1437
        and eval_run.data.metrics["test.samples"] == 360
    )


def test_rematerialising_unchanged_inputs_is_reported_up_to_date(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    config = {
        "raw_shards": {"config": {"source": "digits", "split": "test"}},
        "eval_split": {"config": {"source": "digits"}},
    }
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize(
        [raw_shards, eval_split], instance=instance, resources=resources, run_config={"ops": config}
    )
    shard = sslflow_home / "raw_shards" / "shard-000000.tar"
    before = shard.stat().st_mtime_ns
    again = dg.materialize(
        [raw_shards, eval_split], instance=instance, resources=resources, run_config={"ops": config}
    )
    assert again.success and shard.stat().st_mtime_ns == before
    for asset in ("raw_shards", "eval_split"):
        assert metadata_of(again, asset)["reused_from_run"] == first.run_id
        assert metadata_of(again, asset)[RUN_ID_KEY] == metadata_of(first, asset)[RUN_ID_KEY]
    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("sslflow").experiment_id])) == 2

    config["raw_shards"]["config"]["shard_size"] = 100
    config["raw_shards"]["config"]["overwrite"] = True
    changed = dg.materialize(
        [raw_shards],
        instance=instance,
        resources=resources,
        run_config={"ops": {"raw_shards": config["raw_shards"]}},
    )
    assert (
        "reused_from_run" not in metadata_of(changed, "raw_shards")
        and metadata_of(changed, "raw_shards")["shards"] == 4
    )


def test_bad_source_fails_the_run_with_the_fix(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    with pytest.raises(dg.Failure, match="valid sources"):
        materialize(
            resources,
            {
                "raw_shards": {"config": {"source": "imagenet"}},
                "eval_split": {"config": {"source": "digits"}},
            },
        )
    assert not (sslflow_home / "raw_shards").exists()


def test_unlabelled_eval_source_is_refused(resources: dict[str, object], tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "imgs" / split).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "imgs" / split / "a.png")
    with pytest.raises(dg.Failure, match="needs labels"):
        dg.materialize(
            [eval_split],
            instance=dg.DagsterInstance.ephemeral(),
            resources=resources,
            run_config={
                "ops": {
                    "eval_split": {
                        "config": {"source": "image-folder", "path": str(tmp_path / "imgs")}
                    }
                }
            },
        )


def test_editing_an_image_in_place_is_an_input_change(
    resources: dict[str, object], tmp_path: Path
) -> None:
    """An image folder's identity covers each file's size and modification time."""
    import os

    from photo_folder import build_photo_folder

    folder = build_photo_folder(tmp_path / "photos", per_class=2, grey=0, cmyk=0, exif_rotated=0)
    config = {"raw_shards": {"config": {"source": "image-folder", "path": str(folder.root)}}}
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize(
        [raw_shards], instance=instance, resources=resources, run_config={"ops": config}
    )
    target = folder.files[0]
    stat = target.stat()
    from PIL import Image

    with Image.open(target) as image:
        flipped, fmt = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), image.format
    flipped.save(target, format=fmt)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = dg.materialize(
        [raw_shards], instance=instance, resources=resources, run_config={"ops": config}
    )
    assert "reused_from_run" not in metadata_of(again, "raw_shards")
    assert (
        metadata_of(again, "raw_shards")["content_hash"]
        != metadata_of(first, "raw_shards")["content_hash"]
    )
