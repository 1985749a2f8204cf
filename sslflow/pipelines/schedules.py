"""Schedules: nightly pretraining, weekly re-curation and the weekly round of the curation loop,
with the home's pipeline configuration.

Both ship stopped, as Dagster's schedules do: turn them on in the UI (Automation tab) or with
`dagster schedule start`. Cron strings are configurable without code changes. Each tick runs
with the home's pipeline configuration (<home>/pipeline.yaml), the settings the sslflow command
last ran with, so a schedule retrains and re-curates the user's own data.
"""

import os

import dagster as dg

from sslflow.pipelines.jobs import (
    CURATION_ASSETS,
    PRETRAINING_ASSETS,
    curation_job,
    curation_round_job,
    pretraining_job,
)
from sslflow.pipelines.pipeline_config import run_config_for
from sslflow.pipelines.resources import SslflowHome
from sslflow.pipelines.rounds import (
    ROUND_ASSETS,
    ROUND_CONFIG,
    ROUND_TAG,
    has_pretrained_model,
    latest_round,
)


@dg.schedule(
    name="nightly_pretraining",
    job=pretraining_job,
    cron_schedule=os.environ.get("SSLFLOW_PRETRAINING_CRON", "0 2 * * *"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Pretrain on the current curated shards "
    "(cron: $SSLFLOW_PRETRAINING_CRON, default 02:00 UTC).",
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


@dg.schedule(
    name="weekly_curation_round",
    job=curation_round_job,
    cron_schedule=os.environ.get("SSLFLOW_ROUND_CRON", "0 4 * * 0"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="The next round of the curation loop: curate with the latest model, pretrain on "
    "the result (cron: $SSLFLOW_ROUND_CRON, default Sunday 04:00 UTC; skips until round 0 "
    "has trained a model).",
)
def weekly_curation_round(
    context: dg.ScheduleEvaluationContext, home: SslflowHome
) -> dg.RunRequest | dg.SkipReason:
    if not has_pretrained_model(context.instance):
        return dg.SkipReason(
            "no pretrained model yet: run round 0 first (`sslflow rounds`, or pretraining_job "
            "with pretrained_model.data=raw_shards)"
        )
    return dg.RunRequest(
        run_config=run_config_for(home.path(), ROUND_ASSETS, ROUND_CONFIG),
        tags={ROUND_TAG: str(latest_round(context.instance) + 1)},
    )
