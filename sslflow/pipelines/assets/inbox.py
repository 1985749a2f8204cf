"""New shard sets arriving in the inbox: ingested per dynamic partition, then assigned to the
existing hierarchy without re-clustering, with a drift statistic that can trigger re-curation."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from sslflow.curation.hierarchy_store import load_hierarchy
from sslflow.curation.incremental import assign_shards
from sslflow.data import open_source, write_shards
from sslflow.data.samples import SourceError
from sslflow.pipelines.assets.curation import pool_embeddings
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.instance import upstream_run_ids
from sslflow.pipelines.lineage import skip_when_unchanged
from sslflow.pipelines.metadata import run_metadata, shard_set_metadata, shard_set_metrics
from sslflow.pipelines.resources import MLflowTracking, SslflowHome

inbox_partitions = dg.DynamicPartitionsDefinition(name="inbox")


class InboxShardsConfig(dg.Config):
    inbox: str = Field(
        "", description="inbox folder; empty = <home>/inbox (the inbox sensor's folder)"
    )
    shard_size: int = Field(5000, description="samples per shard of the ingested copy")


def inbox_folder(home: SslflowHome, configured: str = "") -> Path:
    """The folder the inbox sensor watches: ``configured``, else ``<home>/inbox``."""
    return Path(configured) if configured else home.path() / "inbox"


def entry_spec(entry: Path) -> str:
    """The shard-set spec of an inbox entry: a folder's manifest.json, or a file of URLs."""
    return str(entry / "manifest.json") if entry.is_dir() else str(entry)


def partition_key(entry: Path) -> str:
    """``batch-001/`` and ``batch-001.txt`` both become partition ``batch-001``."""
    return entry.name if entry.is_dir() else entry.stem


def find_entry(folder: Path, key: str) -> Path:
    """The inbox entry of partition ``key`` (a folder, else ``<key>.txt``)."""
    return folder / key if (folder / key).is_dir() else folder / f"{key}.txt"


@dg.asset(
    group_name="inbox",
    partitions_def=inbox_partitions,
    code_version="1",
    kinds={"webdataset", "mlflow"},
)
@skip_when_unchanged
def inbox_shards(
    context: dg.AssetExecutionContext,
    config: InboxShardsConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """One inbox entry (a shard-set folder or a file of shard URLs) copied into sslflow's shards."""
    entry = find_entry(inbox_folder(home, config.inbox), context.partition_key)
    try:  # never allow_pipe: an inbox entry is data, and data runs no command
        source = open_source("shards", entry_spec(entry))
    except (SourceError, FileNotFoundError, ValueError) as exc:
        raise bad_input(f"inbox entry {entry} is not a shard set: {exc}") from exc
    out = home.asset_dir("inbox_shards", context.partition_key)
    with mlflow.start_run(context, "inbox_shards") as run:
        run.log_params({"entry": str(entry), **config.model_dump()})
        manifest = write_shards(source, out, shard_size=config.shard_size)
        run.log_metrics(shard_set_metrics(manifest))
        run.log_artifact(out / "manifest.json")
        metadata = shard_set_metadata(manifest, run)
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(manifest.content_hash)
    )


class InboxAssignmentConfig(dg.Config):
    drift_threshold: float = Field(
        1.5,
        description="re-curate when the new data's mean distance to its leaf centroid exceeds "
        "this multiple of the distance the hierarchy was built with",
    )


@dg.asset(
    group_name="inbox",
    partitions_def=inbox_partitions,
    deps=[inbox_shards, "kmeans_hierarchy", "embeddings"],
    code_version="1",
    kinds={"mlflow"},
)
@skip_when_unchanged
def inbox_assignment(
    context: dg.AssetExecutionContext,
    config: InboxAssignmentConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """New samples placed in the existing hierarchy (nearest leaf centroid) with a drift
    statistic."""
    pool = pool_embeddings(home)
    hierarchy = load_hierarchy(home.asset_dir("kmeans_hierarchy"))
    shards = home.asset_dir("inbox_shards", context.partition_key)
    out = home.asset_dir("inbox_assignment", context.partition_key)
    upstream = upstream_run_ids(context, ["kmeans_hierarchy", "embeddings"])
    with mlflow.start_run(context, "inbox_assignment", upstream=upstream) as run:
        result = assign_shards(pool, hierarchy, shards, out)
        exceeded = result.drift > config.drift_threshold
        run.log_params(
            {"drift_threshold": config.drift_threshold, "partition": context.partition_key}
        )
        run.log_metrics(
            {"drift": result.drift, "samples": len(result.distances), "recurate": float(exceeded)}
        )
        occupied = int((result.leaf_counts > 0).sum())
        metadata = {
            "samples": len(result.distances),
            "drift": result.drift,
            "drift_threshold": config.drift_threshold,
            "needs_recuration": exceeded,
            "leaves_hit": occupied,
            **run_metadata(run),
        }
    if exceeded:
        context.log.warning(
            f"drift {result.drift:.2f} > {config.drift_threshold}: the drift sensor will re-curate"
        )
    return dg.MaterializeResult(metadata=metadata)
