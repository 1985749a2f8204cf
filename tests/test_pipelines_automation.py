"""Schedules and sensors evaluated with Dagster's test contexts, against real files and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from sslflow.data import write_shards
from sslflow.data.sources import digits
from sslflow.pipelines.jobs import nightly_pretraining, weekly_curation
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.sensors import inbox_sensor, new_model_sensor


def test_schedules_ship_stopped_with_configured_cron() -> None:
    assert nightly_pretraining.default_status == dg.DefaultScheduleStatus.STOPPED
    assert weekly_curation.default_status == dg.DefaultScheduleStatus.STOPPED
    assert nightly_pretraining.cron_schedule == "0 2 * * *" and weekly_curation.cron_schedule == "0 3 * * 0"
    assert nightly_pretraining.job_name == "pretraining_job" and weekly_curation.job_name == "curation_job"


def make_inbox(home: Path) -> Path:
    inbox = home / "inbox"
    write_shards(digits("test"), inbox / "batch-001", shard_size=200, progress=False)
    shard_list = inbox / "batch-002.txt"
    shard_list.write_text("\n".join(str(p) for p in sorted((inbox / "batch-001").glob("*.tar"))) + "\n")
    (inbox / "notes.md").write_text("not a shard set")
    (inbox / "empty-folder").mkdir()
    return inbox


def test_inbox_sensor_adds_partitions_and_requests_runs_once(sslflow_home: Path) -> None:
    make_inbox(sslflow_home)
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, resources={"home": SslflowHome(root=str(sslflow_home))})
    result = inbox_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["batch-001", "batch-002"]
    assert [r.run_key for r in result.run_requests] == ["batch-001", "batch-002"]
    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "inbox" and list(added.partition_keys) == ["batch-001", "batch-002"]
    assert json.loads(result.cursor) == ["batch-001", "batch-002.txt", "empty-folder", "notes.md"]

    again = inbox_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"home": SslflowHome(root=str(sslflow_home))})
    )
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    write_shards(digits("train"), sslflow_home / "inbox" / "batch-003", shard_size=500, progress=False)
    later = inbox_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"home": SslflowHome(root=str(sslflow_home))})
    )
    assert [r.partition_key for r in later.run_requests] == ["batch-003"]


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

    result = new_model_sensor(dg.build_sensor_context(resources={"mlflow": tracking}))
    (request,) = result.run_requests
    assert request.run_key == "sslflow-simclr-1"
    assert request.run_config["ops"]["probe_features"]["config"]["model"] == "models:/sslflow-simclr/1"
    assert json.loads(result.cursor) == {"sslflow-simclr": 1}

    client.create_model_version("sslflow-simclr", source=(sslflow_home / "model2").as_uri())
    later = new_model_sensor(dg.build_sensor_context(cursor=result.cursor, resources={"mlflow": tracking}))
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
    assert [e.step_key for e in failures] == ["raw_shards"] and "valid sources" in str(failures[0].event_specific_data)
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
