"""Jobs a user launches from the UI or the shell (schedules and sensors launch them too)."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sslflow.pipelines.assets.inbox import inbox_assignment, inbox_partitions, inbox_shards
from sslflow.pipelines.pipeline_config import AssetConfig, run_config_for_assets
from sslflow.pipelines.rounds import ROUND_ASSETS, ROUND_CONFIG
from sslflow.pipelines.stages import CURATION, EVAL_SPLIT, INGEST, PRETRAINING, PROBING

CURATION_ASSETS = INGEST + CURATION
PRETRAINING_ASSETS = PRETRAINING
PROBING_ASSETS = EVAL_SPLIT + PROBING

# Transient failures (I/O, a tracking server that blips) are retried; input that retrying
# cannot fix raises sslflow.pipelines.failures.bad_input(...), which the policy skips.
RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


def _job(
    name: str,
    assets: tuple[str, ...],
    description: str,
    config: AssetConfig | None = None,
) -> UnresolvedAssetJobDefinition:
    """An asset job; ``config`` becomes its Launchpad default (``{asset: {field: value}}``)."""
    # AssetSelection objects, never selection strings: see docs/troubleshooting.md (antlr4).
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        description=description,
        op_retry_policy=RETRY,
        config=None if config is None else run_config_for_assets(config),
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
curation_round_job = _job(
    "curation_round_job",
    ROUND_ASSETS,
    "One round of the curation loop: embed the pool with the latest pretrained model, curate, "
    "pretrain on the curated shards (round 0: pretraining_job with pretrained_model.data "
    "raw_shards, or `sslflow rounds`).",
    ROUND_CONFIG,
)
full_pipeline = _job(
    "full_pipeline",
    CURATION_ASSETS + PRETRAINING_ASSETS + PROBING_ASSETS,
    "Everything: curation, pretraining, probing.",
)
inbox_job = dg.define_asset_job(
    "inbox_job",
    selection=dg.AssetSelection.assets(inbox_shards, inbox_assignment),
    partitions_def=inbox_partitions,
    description="Ingest one inbox entry and assign it to the existing hierarchy.",
    op_retry_policy=RETRY,
)
