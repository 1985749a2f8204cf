"""Schedules and sensors evaluated with Dagster's test contexts, against real files and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from sslflow.data import write_shards
from sslflow.data.datasets import digits
from sslflow.pipelines.pipeline_config import load_pipeline_config, remember
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.schedules import (
    nightly_pretraining,
    weekly_curation,
    weekly_curation_round,
)
from sslflow.pipelines.sensors import drift_sensor, inbox_sensor, new_model_sensor


def test_schedules_ship_stopped_with_configured_cron() -> None:
    schedules = (nightly_pretraining, weekly_curation, weekly_curation_round)
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules)
    assert [s.cron_schedule for s in schedules] == ["0 2 * * *", "0 3 * * 0", "0 4 * * 0"]
    assert [s.job_name for s in schedules] == [
        "pretraining_job",
        "curation_job",
        "curation_round_job",
    ]


def make_inbox(home: Path) -> Path:
    inbox = home / "inbox"
    write_shards(digits("test"), inbox / "batch-001", shard_size=200, progress=False)
    shard_list = inbox / "batch-002.txt"
    shard_list.write_text(
        "\n".join(str(p) for p in sorted((inbox / "batch-001").glob("*.tar"))) + "\n"
    )
    (inbox / "notes.md").write_text("not a shard set")
    (inbox / "empty-folder").mkdir()
    return inbox


def test_inbox_sensor_adds_partitions_and_requests_runs_once(sslflow_home: Path) -> None:
    make_inbox(sslflow_home)
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance, resources={"home": SslflowHome(root=str(sslflow_home))}
    )
    result = inbox_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["batch-001", "batch-002"]
    assert [r.run_key for r in result.run_requests] == ["batch-001", "batch-002"]
    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "inbox" and list(added.partition_keys) == [
        "batch-001",
        "batch-002",
    ]
    assert json.loads(result.cursor) == ["batch-001", "batch-002.txt", "empty-folder", "notes.md"]

    again = inbox_sensor(
        dg.build_sensor_context(
            instance=instance,
            cursor=result.cursor,
            resources={"home": SslflowHome(root=str(sslflow_home))},
        )
    )
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    write_shards(
        digits("train"), sslflow_home / "inbox" / "batch-003", shard_size=500, progress=False
    )
    later = inbox_sensor(
        dg.build_sensor_context(
            instance=instance,
            cursor=result.cursor,
            resources={"home": SslflowHome(root=str(sslflow_home))},
        )
    )
    assert [r.partition_key for r in later.run_requests] == ["batch-003"]


def test_inbox_url_list_with_a_pipe_line_runs_nothing(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    """A list dropped into the inbox is data: its pipe: line is refused by the sensor and by the
    asset (were it launched by hand), and the command never runs."""
    from sslflow.pipelines.definitions import build_definitions

    inbox = make_inbox(sslflow_home)
    marker = sslflow_home / "marker"
    shard = min((inbox / "batch-001").glob("*.tar"))
    (inbox / "evil.txt").write_text(f"{shard}\npipe:touch {marker}; cat {shard}\n")
    instance = dg.DagsterInstance.ephemeral()
    sensed = inbox_sensor(
        dg.build_sensor_context(
            instance=instance, resources={"home": SslflowHome(root=str(sslflow_home))}
        )
    )
    assert "evil" not in [r.partition_key for r in sensed.run_requests]

    instance.add_dynamic_partitions("inbox", ["evil"])
    result = (
        build_definitions()
        .resolve_job_def("inbox_job")
        .execute_in_process(
            instance=instance, resources=resources, partition_key="evil", raise_on_error=False
        )
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["inbox_shards"]
    assert f"{inbox / 'evil.txt'}:2" in str(failures[0].event_specific_data)
    assert not marker.exists()


def test_inbox_sensor_without_inbox_skips(sslflow_home: Path) -> None:
    context = dg.build_sensor_context(resources={"home": SslflowHome(root=str(sslflow_home))})
    result = inbox_sensor(context)
    assert result.run_requests in (None, []) and "does not exist" in str(result.skip_reason)


def test_new_model_sensor_requests_a_probe_per_new_version(sslflow_home: Path) -> None:
    tracking = MLflowTracking(home=str(sslflow_home))
    client: MlflowClient = tracking.client()
    client.create_registered_model("sslflow-simclr")
    client.create_model_version("sslflow-simclr", source=(sslflow_home / "model").as_uri())
    client.create_registered_model("someone-elses-model")
    client.create_model_version("someone-elses-model", source=(sslflow_home / "other").as_uri())

    resources = {"mlflow": tracking, "home": SslflowHome(root=str(sslflow_home))}
    remember(sslflow_home, {"eval_split": {"source": "digits"}, "knn_probe": {"ks": [5]}})
    result = new_model_sensor(dg.build_sensor_context(resources=resources))
    (request,) = result.run_requests
    assert request.run_key == "sslflow-simclr-1"
    assert (
        request.run_config["ops"]["probe_features"]["config"]["model"] == "models:/sslflow-simclr/1"
    )
    assert request.run_config["ops"]["eval_split"]["config"] == {
        "source": "digits"
    }  # the home's pipeline
    assert request.run_config["ops"]["knn_probe"]["config"] == {"ks": [5]}
    assert json.loads(result.cursor) == {"sslflow-simclr": 1}

    client.create_model_version("sslflow-simclr", source=(sslflow_home / "model2").as_uri())
    later = new_model_sensor(dg.build_sensor_context(cursor=result.cursor, resources=resources))
    assert [r.run_key for r in later.run_requests] == ["sslflow-simclr-2"]


def test_bad_input_fails_the_job_at_once_without_retries(sslflow_home: Path) -> None:
    from sslflow.pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def("curation_job")
    result = job.execute_in_process(
        run_config={"ops": {"raw_shards": {"config": {"source": "imagenet"}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["raw_shards"] and "valid sources" in str(
        failures[0].event_specific_data
    )
    assert not [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]


USER_PIPELINE = {
    "raw_shards": {"source": "digits", "split": "all", "shard_size": 600},
    "embeddings": {"dim": 16, "pca_samples": 1000},
    "kmeans_hierarchy": {"levels": [[40, 1, 4], [8, 1, 3]], "dedup": False},
    "curated_index": {"target_size": 600, "min_top_entropy": 0.5},
    "pretrained_model": {
        "backbone": "test_resnet",
        "max_steps": 2,
        "batch_size": 32,
        "samples_per_epoch": 64,
        "num_workers": 0,
    },
    "eval_split": {"source": "digits", "shard_size": 400},
    "probe_features": {"batch_size": 500},
    "knn_probe": {"ks": [10]},
    "linear_probe": {"probes": ["sgd"], "sgd_epochs": 1, "lrs": [0.1]},
    "inbox_shards": {"shard_size": 123},
}


def test_schedules_and_sensors_launch_the_users_pipeline(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    """A user's own source (digits here, not the Fashion-MNIST default) reaches every launch."""
    from sslflow.pipelines.definitions import build_definitions

    remember(sslflow_home, USER_PIPELINE)
    assert load_pipeline_config(sslflow_home) == USER_PIPELINE
    home = {"home": resources["home"]}
    defs = build_definitions()
    instance = dg.DagsterInstance.ephemeral()

    curation = weekly_curation(dg.build_schedule_context(instance=instance, resources=home))
    assert curation.run_config["ops"]["raw_shards"]["config"]["source"] == "digits"
    assert "pretrained_model" not in curation.run_config["ops"]  # only the job's own assets
    ran = defs.resolve_job_def("curation_job").execute_in_process(
        run_config=curation.run_config, instance=instance, resources=resources
    )
    assert ran.success
    assert (
        json.loads((sslflow_home / "raw_shards" / "manifest.json").read_text())["source"]["name"]
        == "digits"
    )

    training = nightly_pretraining(dg.build_schedule_context(instance=instance, resources=home))
    trained = defs.resolve_job_def("pretraining_job").execute_in_process(
        run_config=training.run_config, instance=instance, resources=resources
    )
    assert trained.success
    (event,) = trained.get_asset_materialization_events()
    assert (
        event.materialization.metadata["steps"].value == 2
        and event.materialization.metadata["in_chans"].value == 1
    )

    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "inbox_assignment", metadata={"needs_recuration": True, "drift": 2.5}
        )
    )
    # evaluate_tick is the daemon's own path (calling an asset sensor with resources directly
    # fails inside Dagster 1.13 itself).
    tick = drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=home))
    (drift,) = tick.run_requests
    assert drift.run_config == curation.run_config and drift.tags["sslflow/reason"] == "drift=2.500"

    model = new_model_sensor(
        dg.build_sensor_context(
            instance=instance, resources={**home, "mlflow": resources["mlflow"]}
        )
    )
    (probe,) = model.run_requests
    probed = defs.resolve_job_def("probing_job").execute_in_process(
        run_config=probe.run_config, instance=instance, resources=resources
    )
    assert probed.success
    features = next(
        e
        for e in probed.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "probe_features"
    )
    assert features.materialization.metadata["model"].value == "models:/sslflow-simclr/1"
    assert (
        json.loads((sslflow_home / "eval_split" / "test" / "manifest.json").read_text())["source"][
            "name"
        ]
        == "digits"
    )

    make_inbox(sslflow_home)
    inbox = inbox_sensor(dg.build_sensor_context(instance=instance, resources=home))
    assert all(
        r.run_config["ops"]["inbox_shards"]["config"] == {"shard_size": 123}
        for r in inbox.run_requests
    )
    first = inbox.run_requests[0]
    instance.add_dynamic_partitions("inbox", [first.partition_key])
    ingested = defs.resolve_job_def("inbox_job").execute_in_process(
        run_config=first.run_config,
        instance=instance,
        resources=resources,
        partition_key=first.partition_key,
    )
    assert ingested.success
    shards = json.loads(
        (sslflow_home / "inbox_shards" / first.partition_key / "manifest.json").read_text()
    )["shards"]
    assert shards[0]["samples"] == 123
