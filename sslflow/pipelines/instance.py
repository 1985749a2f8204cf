"""What earlier materialisations recorded, read from the Dagster instance (not a resource)."""

from typing import Any

import dagster as dg

from sslflow.pipelines.metadata import RUN_ID_KEY


def latest_metadata(context: dg.AssetExecutionContext, asset: str, key: str) -> Any:
    """Value of ``key`` in the latest materialisation metadata of ``asset`` (None if absent)."""
    return instance_metadata(context.instance, asset, key)


def instance_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> Any:
    """:func:`latest_metadata` read from an instance (the CLI and schedules have no context)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    materialization = event.asset_materialization if event else None
    entry = materialization.metadata.get(key) if materialization else None
    return entry.value if entry is not None else None


def upstream_run_ids(context: dg.AssetExecutionContext, assets: list[str]) -> dict[str, str]:
    """MLflow run ids recorded in the latest materialisation metadata of ``assets``."""
    found = {asset: latest_metadata(context, asset, RUN_ID_KEY) for asset in assets}
    return {asset: str(run_id) for asset, run_id in found.items() if run_id is not None}
