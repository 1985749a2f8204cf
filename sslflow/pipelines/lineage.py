"""Staleness: an asset whose inputs did not change reports its last materialisation again.

The input fingerprint hashes the asset's config, its code version and the data versions of its
upstream assets (and anything else the asset passes in, such as a source listing or a pinned
model version). When the latest materialisation recorded the same fingerprint and its files
are still there, the asset returns that materialisation's metadata and data version without
redoing the work or opening a new MLflow run, so downstream assets see unchanged inputs too.

Every asset's data version changes when any of its inputs does: assets whose output has a
content hash (shards, embeddings) return it; the others return their input fingerprint.
Dagster's own default data version would not do: it covers the code version and upstream
data versions but not the config, so a changed config would look unchanged downstream.
"""

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

INPUT_FINGERPRINT = "input_fingerprint"
DATA_VERSION_TAG = "dagster/data_version"


def upstream_data_versions(
    context: dg.AssetExecutionContext, assets: Iterable[str]
) -> dict[str, str]:
    """Latest data version of each upstream asset (``""`` when it was never materialised)."""
    versions = {}
    for asset in assets:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
        tags = event.asset_materialization.tags if event and event.asset_materialization else None
        versions[asset] = (tags or {}).get(DATA_VERSION_TAG, "")
    return versions


def input_fingerprint(
    context: dg.AssetExecutionContext,
    config: dg.Config | None,
    upstream: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> str:
    """sha256 of the config, the asset's code version, upstream data versions and ``extra``."""
    body = {
        "config": config.model_dump() if config is not None else None,
        "code_version": context.assets_def.code_versions_by_key.get(context.asset_key),
        "upstream": upstream_data_versions(context, upstream),
        "partition": context.partition_key if context.has_partition_key else None,
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def reuse_if_unchanged(
    context: dg.AssetExecutionContext, fingerprint: str, outputs: Iterable[Path] = ()
) -> dg.MaterializeResult | None:
    """The previous result when its fingerprint matches and ``outputs`` exist, else None."""
    partition = context.partition_key if context.has_partition_key else None
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if partition is not None:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]),
            limit=1,
        ).records
        event = records[0].event_log_entry if records else None
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return None
    recorded = materialization.metadata.get(INPUT_FINGERPRINT)
    if recorded is None or recorded.value != fingerprint:
        return None
    if not all(Path(p).exists() for p in outputs):
        context.log.info("inputs unchanged but outputs are missing: recomputing")
        return None
    context.log.info(
        f"inputs unchanged since run {event.run_id}: reporting it up to date, no work done"
    )
    metadata = {**materialization.metadata, "reused_from_run": event.run_id}
    version = (materialization.tags or {}).get(DATA_VERSION_TAG)
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(version) if version else None
    )


def skip_when_unchanged(
    fn: Callable[..., dg.MaterializeResult],
) -> Callable[..., dg.MaterializeResult]:
    """Wrap an asset body ``(context, config, home, ...)``: reuse the last result when inputs match.

    The upstream assets are the asset's own deps; the output checked for existence is its folder
    ``home.asset_dir(<asset>)``. A body that returns no data version gets the input fingerprint
    as one. Put it under ``@dg.asset``.
    """

    @functools.wraps(fn)
    def asset_body(context: dg.AssetExecutionContext, **kwargs: Any) -> dg.MaterializeResult:
        deps = context.assets_def.asset_deps.get(context.asset_key, set())
        upstream = sorted(key.to_user_string() for key in deps)
        home = kwargs["home"]
        partition = context.partition_key if context.has_partition_key else None
        inputs = input_fingerprint(context, kwargs.get("config"), upstream)
        reused = reuse_if_unchanged(
            context, inputs, [home.asset_dir(context.asset_key.to_user_string(), partition)]
        )
        if reused is not None:
            return reused
        result = fn(context, **kwargs)
        return dg.MaterializeResult(
            metadata={**(result.metadata or {}), INPUT_FINGERPRINT: inputs},
            data_version=result.data_version or dg.DataVersion(inputs),
            check_results=result.check_results,
        )

    return asset_body
