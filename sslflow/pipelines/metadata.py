"""Dagster metadata helpers: small markdown renderers kept apart so they can be tested."""

from __future__ import annotations

from typing import Any

import dagster as dg

from sslflow.data.manifest import Manifest
from sslflow.tracking import TrackedRun

RUN_ID_KEY = "mlflow_run_id"  # the metadata key downstream assets read upstream run ids from


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def shards_table_markdown(manifest: Manifest, limit: int = 5) -> str:
    """A markdown table of the first ``limit`` shards: name, samples, size, sha256 prefix."""
    rows = ["| shard | samples | size | sha256 |", "|---|---:|---:|---|"]
    for shard in manifest.shards[:limit]:
        rows.append(
            f"| {shard.name} | {shard.samples} | {human_bytes(shard.bytes)} | "
            f"`{shard.sha256[:12]}` |"
        )
    if len(manifest.shards) > limit:
        rows.append(f"| … {len(manifest.shards) - limit} more | | | |")
    return "\n".join(rows)


def run_metadata(run: TrackedRun) -> dict[str, Any]:
    """The MLflow run id (read back by downstream assets) and a link to the run."""
    return {RUN_ID_KEY: run.run_id, "mlflow_run_url": dg.MetadataValue.url(run.url)}


def shard_set_metadata(manifest: Manifest, run: TrackedRun) -> dict[str, Any]:
    """Metadata shown in the Dagster UI for any shard set."""
    assert manifest.root is not None
    return {
        "samples": manifest.total_samples,
        "shards": len(manifest.shards),
        "skipped": len(manifest.skipped),
        "total_size": human_bytes(manifest.total_bytes),
        "total_bytes": manifest.total_bytes,
        "manifest": dg.MetadataValue.path(str(manifest.root / "manifest.json")),
        "content_hash": manifest.content_hash,
        "first_shards": dg.MetadataValue.md(shards_table_markdown(manifest)),
        **run_metadata(run),
    }


def shard_set_metrics(manifest: Manifest) -> dict[str, float]:
    return {
        "samples": manifest.total_samples,
        "shards": len(manifest.shards),
        "bytes": manifest.total_bytes,
        "skipped": len(manifest.skipped),
    }
