"""Jobs a user launches from the UI or the shell, and the schedules that run them."""

import os

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sslflow.pipelines.pipeline_config import run_config_for
from sslflow.pipelines.resources import SslflowHome

CURATION_ASSETS = (
    "raw_shards",
    "embeddings",
    "kmeans_hierarchy",
    "curated_index",
    "curated_shards",
)
PRETRAINING_ASSETS = ("pretrained_model",)
PROBING_ASSETS = ("eval_split", "probe_features", "knn_probe", "linear_probe", "probing_report")

# Transient failures (I/O, a tracking server that blips) are retried; input that retrying
# cannot fix raises sslflow.pipelines.failures.bad_input(...), which the policy skips.
RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


def _job(name: str, assets: tuple[str, ...], description: str) -> UnresolvedAssetJobDefinition:
    # AssetSelection objects, never selection strings: see docs/troubleshooting.md (antlr4).
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        description=description,
        op_retry_policy=RETRY,
    )


curation_job = _job(
    "curation_job",
    CURATION_ASSETS,
    "raw_shards → curated_shards: ingest, embed, cluster, sample, write.",
)
pretraining_job = _job(
    "pretraining_job", PRETRAINING_ASSETS, "Pretrain a backbone on the curated shards."
)
probing_job = _job(
    "probing_job",
    PROBING_ASSETS,
    "Probe the latest model with kNN and linear probes; write the report.",
)
full_pipeline = _job(
    "full_pipeline",
    CURATION_ASSETS + PRETRAINING_ASSETS + PROBING_ASSETS,
    "Everything: curation, pretraining, probing.",
)
JOBS = [curation_job, pretraining_job, probing_job, full_pipeline]

# Both ship stopped, as Dagster's schedules do: turn them on in the UI (Automation tab) or with
# `dagster schedule start`. Cron strings are configurable without code changes. Each tick runs
# with the home's pipeline configuration (<home>/pipeline.yaml), the settings the sslflow
# command last ran with, so a schedule retrains and re-curates the user's own data.


@dg.schedule(
    name="nightly_pretraining",
    job=pretraining_job,
    cron_schedule=os.environ.get("SSLFLOW_PRETRAINING_CRON", "0 2 * * *"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Pretrain on the current curated shards (cron: $SSLFLOW_PRETRAINING_CRON, default 02:00 UTC).",
)
def nightly_pretraining(context: dg.ScheduleEvaluationContext, home: SslflowHome) -> dg.RunRequest:
    return dg.RunRequest(run_config=run_config_for(home.path(), PRETRAINING_ASSETS))


@dg.schedule(
    name="weekly_curation",
    job=curation_job,
    cron_schedule=os.environ.get("SSLFLOW_CURATION_CRON", "0 3 * * 0"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Refresh the curated set (cron: $SSLFLOW_CURATION_CRON, default Sunday 03:00 UTC).",
)
def weekly_curation(context: dg.ScheduleEvaluationContext, home: SslflowHome) -> dg.RunRequest:
    return dg.RunRequest(run_config=run_config_for(home.path(), CURATION_ASSETS))


SCHEDULES = [nightly_pretraining, weekly_curation]
