"""Curation assets: kmeans_hierarchy → curated_index → curated_shards (embeddings: its own module).

Thin wrappers over ``sslflow.curation``: each writes its files under the sslflow home, logs one
MLflow run (config as params, headline metrics, small artifacts, URI + sha256 of big files) and
returns metadata with the run id.
"""

from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field, field_validator

from sslflow.curation.build import DEDUP_FILE, DedupConfig, HierarchyBuilder, cluster_pool
from sslflow.curation.curate import CurationRound, SamplingConfig, curate
from sslflow.curation.distributed import MODULE as DISTRIBUTED_MODULE, torchrun_builder
from sslflow.curation.embedding_set import EmbeddingSet, load_embeddings
from sslflow.curation.hierarchical import HierarchyConfig
from sslflow.curation.hierarchy_store import HierarchyError, load_hierarchy
from sslflow.curation.levels import levels_value, parse_levels
from sslflow.curation.rows import EmbeddingsError
from sslflow.curation.shards import SelectedSource, pool_source
from sslflow.curation.storage import load_json
from sslflow.data import write_shards
from sslflow.data.manifest import sha256_file
from sslflow.fields import attribute_docs
from sslflow.pipelines.assets.data import ShardWriterConfig, raw_manifest
from sslflow.pipelines.config import core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.fingerprints import eval_copies, pool_copies
from sslflow.pipelines.instance import latest_metadata, upstream_run_ids
from sslflow.pipelines.lineage import (
    skip_when_unchanged,
)
from sslflow.pipelines.metadata import run_metadata, shard_set_metadata, shard_set_metrics
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.rounds import ROUND_KEY
from sslflow.pipelines.torchrun import TorchrunLauncher
from sslflow.tracking import TrackedRun, earlier_runs

GROUP = "curation"


def pool_embeddings(home: SslflowHome) -> EmbeddingSet:
    """The pool's embeddings, checked; a missing or malformed folder fails as bad input."""
    try:
        return load_embeddings(home.asset_dir("embeddings"))
    except (FileNotFoundError, EmbeddingsError) as exc:
        raise bad_input(str(exc)) from exc


# --------------------------------------------------------------------------- kmeans_hierarchy

DEDUP_FIELDS = {
    "enabled": "dedup",
    "decontaminate": "dedup_eval",
    "neighbours": "dedup_neighbours",
    "max_shift": "dedup_max_shift",
    "pixel_tolerance": "dedup_pixel_tolerance",
    "max_differing": "dedup_max_differing",
    "min_correlation": "dedup_min_correlation",
    "min_coverage": "dedup_min_coverage",
    "min_detail_correlation": "dedup_min_detail_correlation",
    "examples": "dedup_examples",
}


class KMeansHierarchyConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        HierarchyConfig,
        "HierarchyFields",
        "The fields of sslflow.curation.hierarchical.HierarchyConfig, with its defaults.",
        exclude=("levels", "progress"),
    ),
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        DedupConfig,
        "DedupFields",
        "The fields of sslflow.curation.build.DedupConfig, prefixed dedup.",
        rename=DEDUP_FIELDS,
    ),
):
    """Hierarchical k-means with resampling (see ``sslflow.curation.hierarchical``), after
    removing copies of evaluation images and duplicates (``sslflow.curation.dedup``)."""

    # str | list[list[int]]: Dagster's config schema has no such union, so the field is Any
    # and the validator below accepts exactly those two forms.
    levels: Any = Field(
        levels_value(HierarchyConfig().levels),
        description=attribute_docs(HierarchyConfig)["levels"],
    )
    processes: int = Field(
        1,
        description="processes for level 0 (the pass over every embedding); > 1 launches torchrun "
        "through Dagster Pipes, each rank clustering a slice of the memmap (all-reduce over NCCL "
        "when every rank has a GPU of its own, else gloo)",
    )

    @field_validator("levels")
    @classmethod
    def _check_levels(cls, value: Any) -> str | list[list[int]]:
        """``"auto"`` or ``[[n_clusters, n_resampling_steps, sample_size], ...]``; anything else
        fails here, naming the field, before any work."""
        try:
            return levels_value(parse_levels(value))
        except HierarchyError as exc:
            raise ValueError(f"kmeans_hierarchy.{exc}") from exc

    def hierarchy_config(self, embedder: str) -> HierarchyConfig:
        """The core config, its geometry resolved for rows made by ``embedder``."""
        core = HierarchyConfig(**core_values(self, HierarchyConfig), progress=True)
        return core.for_embedder(embedder)

    def dedup_config(self) -> DedupConfig:
        return DedupConfig(**core_values(self, DedupConfig, DEDUP_FIELDS))


def _hierarchy_builder(
    context: dg.AssetExecutionContext,
    home: SslflowHome,
    torchrun: TorchrunLauncher,
    config: KMeansHierarchyConfig,
    embedder: str,
) -> HierarchyBuilder | None:
    """None (build in this process), or ``config.processes`` torchrun ranks through Pipes."""
    if config.processes <= 1:
        return None
    return torchrun_builder(
        lambda arguments: torchrun.run_module(
            context, DISTRIBUTED_MODULE, arguments, config.processes
        ),
        home.asset_dir("embeddings"),
        home.asset_dir("kmeans_hierarchy"),
        config.hierarchy_config(embedder),
        home.path() / "launch" / "kmeans_hierarchy",
    )


@dg.asset(
    group_name=GROUP,
    # Copies are found on raw_shards' pixels; embeddings' data version stands for their content
    # (a new shard layout of the same images reruns nothing here). eval_split: decontamination.
    deps=["embeddings", "eval_split"],
    code_version="2",
    kinds={"numpy", "mlflow"},
)
@skip_when_unchanged
def kmeans_hierarchy(
    context: dg.AssetExecutionContext,
    config: KMeansHierarchyConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
    torchrun: TorchrunLauncher,
) -> dg.MaterializeResult:
    """Centroids, assignments and CSR clusters per level (resumable per level and step), built
    after copies of evaluation images and duplicates left the pool."""
    source = pool_embeddings(home)
    embedder = source.embedder()
    out = home.asset_dir("kmeans_hierarchy")
    upstream = upstream_run_ids(context, ["raw_shards", "embeddings"])
    dedup = config.dedup_config()
    keys = source.keys()
    copies = pool_copies(home, keys) if dedup.enabled else None
    evaluation = eval_copies(context, home) if dedup.enabled and dedup.decontaminate else None
    with mlflow.start_run(context, "kmeans_hierarchy", upstream=upstream) as run:
        run.log_params(config.model_dump())
        try:
            built = cluster_pool(
                source.array(),
                keys,
                out,
                config.hierarchy_config(embedder),
                dedup,
                copies,
                evaluation,
                _hierarchy_builder(context, home, torchrun, config, embedder),
            )
        except (HierarchyError, EmbeddingsError) as exc:
            raise bad_input(str(exc)) from exc
        if config.dedup:
            removed = built.dedup
            context.log.info(
                f"dedup: removed {removed.contaminated_removed} copies of evaluation images "
                f"({removed.decontaminated_against or 'no evaluation set'}) and "
                f"{removed.duplicates_removed} duplicates in {removed.duplicate_groups} groups "
                f"({', '.join(f'{m} {n}' for m, n in removed.removed_by_method.items())})"
            )
        hierarchy = built.hierarchy
        run.log_metrics(built.metrics())
        for level in range(len(hierarchy.stats)):
            run.log_artifact(hierarchy.level_dir(level) / "centroids.npy", f"level_{level:02d}")
            run.log_artifact(hierarchy.level_dir(level) / "stats.json", f"level_{level:02d}")
        for name in ("config.json", "summary.json", DEDUP_FILE):
            run.log_artifact(out / name)
        run.set_tags(
            {
                "sslflow.hierarchy_uri": out.as_uri(),
                "sslflow.assignments_sha256": sha256_file(
                    hierarchy.level_dir(0) / "assignments.npy"
                ),
                "sslflow.embeddings_sha256": sha256_file(source.path),
            }
        )
        run.log_params({"geometry": hierarchy.geometry, "embedder": embedder})
        metadata = {
            "levels": str(config.levels),
            "geometry": hierarchy.geometry,
            "points": len(hierarchy.rows()),
            "duplicates_removed": built.dedup.duplicates_removed,
            "contaminated_removed": built.dedup.contaminated_removed,
            **{f"level_{i}_inertia": s["inertia"] for i, s in enumerate(hierarchy.stats)},
            "path": dg.MetadataValue.path(str(out)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=kmeans_hierarchy, description="every leaf cluster holds at least one point")
def kmeans_no_empty_leaf(home: SslflowHome) -> dg.AssetCheckResult:
    hierarchy = load_hierarchy(home.asset_dir("kmeans_hierarchy"))
    sizes = np.diff(hierarchy.clusters(0)[0])
    empty = np.flatnonzero(sizes == 0)
    return dg.AssetCheckResult(
        passed=not len(empty),
        metadata={
            "empty_leaf_clusters": len(empty),
            "leaf_clusters": len(sizes),
            "examples": ", ".join(str(c) for c in empty[:10]),
        },
    )


# --------------------------------------------------------------------------- curated_index


class CuratedIndexConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        SamplingConfig,
        "SamplingFields",
        "The fields of sslflow.curation.curate.SamplingConfig, with its defaults.",
    )
):
    """Balanced hierarchical sampling (see ``sslflow.curation.sampling``)."""

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(**core_values(self, SamplingConfig))


def earlier_rounds(run: TrackedRun, limit: int = 10) -> list[dict[str, object]]:
    """Rows of the earlier finished curated_index runs of the experiment, oldest first."""
    found = earlier_runs(
        run.client,
        run.experiment_id,
        {"sslflow.stage": "curated_index"},
        run.run_id,
        limit,
        finished_only=True,
    )
    return [
        CurationRound(
            int(r.data.tags.get("sslflow.curation_round", 0)),
            r.data.tags.get("sslflow.embedder", ""),
        ).row(r.data.metrics)
        for r in reversed(found)
    ]


@dg.asset(
    group_name=GROUP,
    deps=["kmeans_hierarchy", "embeddings", "raw_shards"],  # keys, labels and thumbnails too
    code_version="1",
    kinds={"numpy", "mlflow"},
)
@skip_when_unchanged
def curated_index(
    context: dg.AssetExecutionContext,
    config: CuratedIndexConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Selected keys with their cluster path, counts per cluster per level and the HTML report."""
    sampling = config.sampling_config()
    try:
        sampling.leaf_strategy()
    except ValueError as exc:
        raise bad_input(str(exc)) from exc
    source = pool_embeddings(home)
    hierarchy = load_hierarchy(home.asset_dir("kmeans_hierarchy"))
    pool = raw_manifest(home)
    out = home.asset_dir("curated_index")
    upstream = upstream_run_ids(context, ["raw_shards", "embeddings", "kmeans_hierarchy"])
    this_round = CurationRound(
        int(latest_metadata(context, "embeddings", ROUND_KEY) or 0),
        str(latest_metadata(context, "embeddings", "embedder") or ""),
    )
    with mlflow.start_run(context, "curated_index", upstream=upstream) as run:
        run.log_params(config.model_dump())
        run.set_tags(
            {"sslflow.curation_round": this_round.number, "sslflow.embedder": this_round.embedder}
        )
        curation = curate(hierarchy, source, pool, out, sampling, this_round, earlier_rounds(run))
        run.log_metrics(curation.metrics())
        run.log_artifact(out / "summary.json")
        run.log_folder(out / "report", "report")
        run.set_tags(
            {
                "sslflow.curated_index_uri": out.as_uri(),
                "sslflow.curated_rows_sha256": sha256_file(out / "rows.npy"),
            }
        )
        metadata = {
            ROUND_KEY: this_round.number,
            "selected": len(curation.curated.rows),
            "entropy_top_pool": curation.summary["entropy_top_pool"],
            "entropy_top_curated": curation.summary["entropy_top_curated"],
            "min_top_entropy": curation.summary["min_top_entropy"],
            **curation.class_balance(),
            "report": dg.MetadataValue.path(str(curation.report)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=curated_index,
    blocking=True,
    description="curated counts are balanced over top-level clusters (normalised entropy ≥ "
    "min_top_entropy); an unbalanced selection is what curation exists to avoid, so "
    "curated_shards and pretraining do not run on it",
)
def curated_top_entropy(home: SslflowHome) -> dg.AssetCheckResult:
    summary = load_json(home.asset_dir("curated_index") / "summary.json")
    curated, threshold = summary["entropy_top_curated"], summary["min_top_entropy"]
    passed = curated >= threshold
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "entropy_top_curated": curated,
            "threshold": threshold,
            "entropy_top_pool": summary["entropy_top_pool"],
        },
        description=None
        if passed
        else (
            f"entropy_top_curated {curated:.4f} < min_top_entropy {threshold:g} (pool "
            f"{summary['entropy_top_pool']:.4f}): the selection is unbalanced over the top-level "
            "clusters. Fix: raise kmeans_hierarchy.levels (more clusters or resampling steps), "
            "use a stronger embedder (embeddings.embedder), curate fewer samples "
            "(curated_index.target_size) or lower curated_index.min_top_entropy"
        ),
    )


# --------------------------------------------------------------------------- curated_shards


class CuratedShardsConfig(ShardWriterConfig):
    """How the curated samples are written (their encoded bytes pass through unchanged unless
    ``max_side`` downscales them)."""


@dg.asset(
    group_name=GROUP,
    deps=["curated_index", "raw_shards"],
    code_version="1",
    kinds={"webdataset", "mlflow"},
)
@skip_when_unchanged
def curated_shards(
    context: dg.AssetExecutionContext,
    config: CuratedShardsConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """The curated samples as WebDataset shards (original encoded bytes, keys and labels)."""
    keys = frozenset(
        (home.asset_dir("curated_index") / "keys.txt").read_text(encoding="utf-8").splitlines()
    )
    source = SelectedSource(pool_source(raw_manifest(home)), keys)
    out = home.asset_dir("curated_shards")
    upstream = upstream_run_ids(context, ["raw_shards", "curated_index"])
    with mlflow.start_run(context, "curated_shards", upstream=upstream) as run:
        run.log_params(config.model_dump())
        try:
            writer = config.writer()
        except ValueError as exc:
            raise bad_input(str(exc)) from exc
        manifest = write_shards(source, out, **vars(writer), overwrite=True)
        if manifest.total_samples != len(keys):
            raise bad_input(
                f"{len(keys) - manifest.total_samples} curated keys were not found in raw_shards"
            )
        run.log_metrics(shard_set_metrics(manifest))
        run.log_artifact(out / "manifest.json")
        run.set_tags(
            {"sslflow.shards_uri": out.as_uri(), "sslflow.content_hash": manifest.content_hash}
        )
        metadata = shard_set_metadata(manifest, run)
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(manifest.content_hash)
    )
