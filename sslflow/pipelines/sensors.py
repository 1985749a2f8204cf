"""Sensors: new shard sets in the inbox, drift that calls for re-curation, new model versions."""

import json
from pathlib import Path

import dagster as dg

from sslflow.data.keys import safe_key
from sslflow.data.manifest import resolve_urls
from sslflow.pipelines.assets.inbox import (
    entry_spec,
    inbox_assignment,
    inbox_folder,
    inbox_partitions,
    inbox_shards,
    partition_key,
)
from sslflow.pipelines.jobs import (
    CURATION_ASSETS,
    PROBING_ASSETS,
    curation_job,
    inbox_job,
    probing_job,
)
from sslflow.pipelines.pipeline_config import run_config_for
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.tracking.registry import sslflow_versions


def check_entry(entry: Path) -> str | None:
    """Why ``entry`` is not a shard set, or None when it is one."""
    if entry.name.startswith("."):
        return "hidden"
    if safe_key(partition_key(entry)) != partition_key(entry):
        return "name must be letters, digits, '_' or '-' (it becomes the partition key)"
    if entry.is_dir() and not (entry / "manifest.json").is_file():
        return "folder without manifest.json"
    if entry.is_file() and entry.suffix != ".txt":
        return "files must be .txt lists of shard URLs"
    if not entry.is_dir() and not entry.is_file():
        return "neither a folder nor a file"
    try:
        urls, _ = resolve_urls(entry_spec(entry))
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is skipped with its reason
        return f"unreadable: {exc}"
    return None if urls else "no shard URLs"


@dg.sensor(
    job=inbox_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Each new folder with a manifest.json, or .txt list of shard URLs, in <home>/inbox "
    "becomes a partition and a run of inbox_job; anything else is skipped with a logged reason.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, home: SslflowHome) -> dg.SensorResult:
    """New inbox entries by name (the cursor holds every name seen, so each is judged once)."""
    folder = inbox_folder(home)
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    if not folder.is_dir():
        return dg.SensorResult(skip_reason=f"inbox {folder} does not exist yet")
    fresh: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.name in seen:
            continue
        seen.add(entry.name)
        reason = check_entry(entry)
        if reason:
            context.log.warning(f"inbox: skipping {entry}: {reason}")
            continue
        fresh.append(partition_key(entry))
    run_config = run_config_for(
        home.path(), (inbox_shards.key.to_user_string(), inbox_assignment.key.to_user_string())
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=key, partition_key=key, run_config=run_config) for key in fresh
        ],
        dynamic_partitions_requests=[inbox_partitions.build_add_request(fresh)] if fresh else [],
        cursor=json.dumps(sorted(seen)),
    )


@dg.asset_sensor(
    asset_key=dg.AssetKey("inbox_assignment"),
    job=curation_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    required_resource_keys={"home"},  # asset sensors take resources this way, not as parameters
    description="Runs curation_job, with the home's pipeline configuration, when an inbox "
    "assignment's drift passes its threshold.",
)
def drift_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    """One re-curation per flagged inbox_assignment materialisation (its run id is the key)."""
    materialization = asset_event.asset_materialization
    metadata = materialization.metadata if materialization else {}
    flag = metadata.get("needs_recuration")
    if flag is None or not flag.value:
        return dg.SkipReason("latest inbox assignment is within the drift threshold")
    drift = metadata["drift"].value
    return dg.RunRequest(
        run_key=f"recurate-{asset_event.run_id}",
        run_config=run_config_for(context.resources.home.path(), CURATION_ASSETS),
        tags={"sslflow/reason": f"drift={drift:.3f}"},
    )


@dg.sensor(
    job=probing_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="A probing report for every new version of a registered sslflow-* model, with "
    "the home's pipeline configuration for everything but the model.",
)
def new_model_sensor(
    context: dg.SensorEvaluationContext, mlflow: MLflowTracking, home: SslflowHome
) -> dg.SensorResult:
    """The cursor holds the newest version seen per registered model; newer ones are probed."""
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    latest = dict(seen)
    for version in sslflow_versions(mlflow.client()):
        number = int(version.version)
        if number <= seen.get(version.name, 0):
            continue
        latest[version.name] = max(latest.get(version.name, 0), number)
        uri = f"models:/{version.name}/{number}"
        requests.append(
            dg.RunRequest(
                run_key=f"{version.name}-{number}",
                run_config=run_config_for(
                    home.path(), PROBING_ASSETS, {"probe_features": {"model": uri}}
                ),
                tags={"sslflow/model": uri},
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(latest, sort_keys=True))
