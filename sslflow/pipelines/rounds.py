"""The curation loop: each round's self-supervised model embeds the pool that the next round
curates (Vo et al., 2024; DINOv2 curates with its own features).

Round 0 (the bootstrap) pretrains on the raw pool. Every later round is one run of
``curation_round_job``: embeddings with ``embedder: latest-model`` (the model the previous
round trained), copy removal, hierarchical k-means, sampling, the curated shards, and
pretrained_model on them. The round number is the ``curation_round`` metadata of embeddings
and curated_index (the latest curated_index's plus one), also an MLflow tag of both runs, and
the curation report tabulates every round's balance.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from sslflow.pipelines.instance import instance_metadata
from sslflow.pipelines.pipeline_config import AssetConfig, merged
from sslflow.pipelines.stages import CURATION, PRETRAINING

LATEST_MODEL = "latest-model"  # the embedder of a round: the model the previous round trained
ROUND_KEY = "curation_round"  # metadata key of embeddings and curated_index
ROUND_ASSETS = CURATION + PRETRAINING
BOOTSTRAP_ASSETS = PRETRAINING
# What makes a run a round: these fields win over the pipeline configuration's.
ROUND_CONFIG: AssetConfig = {
    "embeddings": {"embedder": LATEST_MODEL},
    "pretrained_model": {"data": "curated_shards"},
}
BOOTSTRAP_CONFIG: AssetConfig = {"pretrained_model": {"data": "raw_shards"}}
ROUND_TAG = "sslflow/curation_round"  # the Dagster run tag of a round's run


def with_round_fields(
    config: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Mapping[str, Any]]
) -> AssetConfig:
    """``config`` (what the user asked for in this command) with the loop's ``fixed`` fields on
    top; the pipeline configuration's own values for them are overridden without complaint.

    Raises:
        ValueError: ``config`` sets one of those fields to something else (the loop would
            silently ignore it).
    """
    for asset, fields in fixed.items():
        for field, value in fields.items():
            given = config.get(asset, {}).get(field, value)
            if given != value:
                raise ValueError(
                    f"{asset}.{field}={given!r} conflicts with the curation loop, which sets "
                    f"{asset}.{field}={value!r}; drop that setting"
                )
    return merged(config, fixed)


def has_pretrained_model(instance: dg.DagsterInstance) -> bool:
    """Whether pretrained_model was ever materialised on ``instance`` (else round 0 is due)."""
    return instance.get_latest_materialization_event(dg.AssetKey("pretrained_model")) is not None


def latest_round(instance: dg.DagsterInstance) -> int:
    """The ``curation_round`` of the latest curated_index (0 when none was curated yet); the
    next round, wherever it is started from (the embeddings asset, the CLI, the schedule), is
    this plus one."""
    value = instance_metadata(instance, "curated_index", ROUND_KEY)
    return value if isinstance(value, int) else 0
