"""Curation assets: embeddings → kmeans_hierarchy → curated_index → curated_shards.

Thin wrappers over ``sslflow.curation``: each writes its files under the sslflow home, logs one
MLflow run (config as params, headline metrics, small artifacts, URI + sha256 of big files) and
returns metadata with the run id.
"""

import os
import sys
import time
from dataclasses import astuple
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from sslflow.curation.dedup import find_duplicates
from sslflow.curation.embeddings import EmbedConfig, embed_shards, load_embeddings
from sslflow.curation.hierarchical import (
    Hierarchy,
    HierarchyConfig,
    HierarchyError,
    build_hierarchy,
    find_invalid_rows,
    load_hierarchy,
)
from sslflow.curation.report import ReportInputs, class_shares, thumbnail_rows, write_report
from sslflow.curation.sampling import LeafStrategy, sample_hierarchy
from sslflow.curation.shards import SelectedSource, pool_source, read_images
from sslflow.curation.stats import normalised_entropy, size_quantiles
from sslflow.curation.storage import load_json, load_npy, save_json, save_npy
from sslflow.data import Manifest, write_shards
from sslflow.data.manifest import sha256_file
from sslflow.fields import attribute_docs
from sslflow.pipelines.assets.data import ShardWriterConfig
from sslflow.pipelines.config import core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.lineage import (
    INPUT_FINGERPRINT,
    input_fingerprint,
    reuse_if_unchanged,
    skip_when_unchanged,
)
from sslflow.pipelines.metadata import run_metadata, shard_set_metadata, shard_set_metrics
from sslflow.pipelines.resources import (
    MLflowTracking,
    SslflowHome,
    latest_metadata,
    upstream_run_ids,
)
from sslflow.tracking import TrackedRun, earlier_runs, pin_model_uri

GROUP = "curation"


def _raw_manifest(home: SslflowHome) -> Manifest:
    path = home.asset_dir("raw_shards") / "manifest.json"
    if not path.is_file():
        raise bad_input(f"no raw_shards manifest at {path}: materialise raw_shards first")
    return Manifest.load(path)


def _log_folder(run: TrackedRun, folder: Path, artifact_path: str) -> None:
    for path in sorted(folder.iterdir()):
        if path.is_file():
            run.log_artifact(path, artifact_path)


# --------------------------------------------------------------------------- embeddings


class EmbeddingsConfig(
    derive_config(
        EmbedConfig,
        "EmbedFields",
        "The fields of sslflow.curation.embeddings.EmbedConfig, with its defaults.",
        exclude=("tracking_uri", "progress"),
    )
):
    """How the pool is embedded (see ``sslflow.curation.embeddings``). ``embedder`` also takes
    ``latest-model``: the model of the latest pretrained_model run, so round t's model curates
    round t+1."""

    def embed_config(self, tracking_uri: str, embedder: str) -> EmbedConfig:
        values = {**core_values(self, EmbedConfig), "embedder": embedder}
        return EmbedConfig(**values, tracking_uri=tracking_uri, progress=True)


LATEST_MODEL = "latest-model"
ROUND_KEY = "curation_round"


def resolve_embedder(
    context: dg.AssetExecutionContext, embedder: str, tracking_uri: str
) -> tuple[str, int]:
    """The embedder to use, a model pinned to its version, and the curation round it starts.

    ``latest-model`` becomes the version-pinned ``model_uri`` of the latest pretrained_model
    materialisation and starts the round after the latest curated_index's; an alias
    (``models:/<name>@<alias>``) becomes the version it names now; any other embedder is round 0.
    """
    if embedder != LATEST_MODEL:
        try:
            return pin_model_uri(embedder, tracking_uri), 0
        except ValueError as exc:
            raise bad_input(str(exc)) from exc
    uri = latest_metadata(context, "pretrained_model", "model_uri")
    if not uri:
        raise bad_input(
            "embedder latest-model needs a pretrained model: materialise pretrained_model first"
        )
    previous = latest_metadata(context, "curated_index", ROUND_KEY)
    return str(uri), int(previous or 0) + 1


@dg.asset(group_name=GROUP, deps=["raw_shards"], code_version="1", kinds={"numpy", "mlflow"})
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """N×D float16 embedding memmap of the raw pool, with keys and labels (resumable by chunk)."""
    manifest = _raw_manifest(home)
    out = home.asset_dir("embeddings")
    embedder, curation_round = resolve_embedder(context, config.embedder, mlflow.resolved_uri())
    # The pinned model is an input too: `latest-model` names a new model after each pretraining.
    inputs = input_fingerprint(context, config, ["raw_shards"], extra={"embedder": embedder})
    reused = reuse_if_unchanged(context, inputs, [out])
    if reused is not None:
        return reused
    with mlflow.start_run(
        context, "embeddings", upstream=upstream_run_ids(context, ["raw_shards"])
    ) as run:
        run.log_params({**config.model_dump(), "resolved_embedder": embedder})
        run.log_shard_input("raw_shards", manifest, "curation")
        run.set_tags({"sslflow.curation_round": curation_round})
        started = time.perf_counter()
        result = embed_shards(manifest, out, config.embed_config(mlflow.resolved_uri(), embedder))
        seconds = time.perf_counter() - started
        array = result.array()
        digest = sha256_file(result.path)
        run.log_metrics(
            {
                "rows": len(array),
                "dim": array.shape[1],
                "seconds": seconds,
                "images_per_second": len(array) / max(seconds, 1e-9),
            }
        )
        run.set_tags(
            {
                "sslflow.embeddings_uri": result.path.as_uri(),
                "sslflow.embeddings_sha256": digest,
                "sslflow.embedder_fingerprint": result.meta()["fingerprint"],
            }
        )
        run.log_artifact(out / "meta.json")
        run.log_artifact(out / "embedder.json")
        metadata = {
            "rows": len(array),
            "dim": int(array.shape[1]),
            "embedder": embedder,
            ROUND_KEY: curation_round,
            "path": dg.MetadataValue.path(str(result.path)),
            "sha256": digest,
            INPUT_FINGERPRINT: inputs,
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(digest))


@dg.asset_check(
    asset=embeddings, blocking=True, description="no NaN or inf in the embedding memmap"
)
def embeddings_finite(home: SslflowHome) -> dg.AssetCheckResult:
    result = load_embeddings(home.asset_dir("embeddings"))
    invalid = find_invalid_rows(result.array())
    keys = result.keys()
    return dg.AssetCheckResult(
        passed=not len(invalid),
        metadata={
            "invalid_rows": len(invalid),
            "example_keys": ", ".join(keys[i] for i in invalid[:10]),
        },
    )


# --------------------------------------------------------------------------- kmeans_hierarchy


class KMeansHierarchyConfig(
    derive_config(
        HierarchyConfig,
        "HierarchyFields",
        "The fields of sslflow.curation.hierarchical.HierarchyConfig, with its defaults.",
        exclude=("levels", "progress"),
    )
):
    """Hierarchical k-means with resampling (see ``sslflow.curation.hierarchical``), after
    near-duplicate removal."""

    levels: list[list[int]] = Field(
        [list(astuple(level)) for level in HierarchyConfig().levels],
        description=attribute_docs(HierarchyConfig)["levels"],
    )
    dedup: bool = Field(True, description="remove near-duplicates before clustering")
    dedup_threshold: float = Field(
        0.995,
        description="cosine similarity at or above which two samples are near-duplicates (0.995 on pixel-PCA "
        "embeddings removes ~0.6% of Fashion-MNIST train)",
    )
    dedup_neighbours: int = Field(
        8, description="nearest neighbours searched per sample for duplicates"
    )
    processes: int = Field(
        1,
        description="processes for level 0 (the pass over every embedding); > 1 launches torchrun "
        "through Dagster Pipes, each rank clustering a slice of the memmap (gloo all-reduce)",
    )

    def hierarchy_config(self) -> HierarchyConfig:
        return HierarchyConfig(**core_values(self, HierarchyConfig), progress=True)


@dg.asset(group_name=GROUP, deps=["embeddings"], code_version="1", kinds={"numpy", "mlflow"})
@skip_when_unchanged
def kmeans_hierarchy(
    context: dg.AssetExecutionContext,
    config: KMeansHierarchyConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Centroids, assignments and CSR clusters per level (resumable per level and step)."""
    source = load_embeddings(home.asset_dir("embeddings"))
    array, keys = source.array(), source.keys()
    out = home.asset_dir("kmeans_hierarchy")
    upstream = upstream_run_ids(context, ["raw_shards", "embeddings"])
    with mlflow.start_run(context, "kmeans_hierarchy", upstream=upstream) as run:
        run.log_params(config.model_dump())
        started = time.perf_counter()
        rows, dedup_info = None, {"duplicates_removed": 0, "duplicate_groups": 0, "pairs": []}
        if config.dedup:
            found = find_duplicates(
                array, config.dedup_threshold, config.dedup_neighbours, progress=True
            )
            rows = found.keep
            dedup_info = {
                "duplicates_removed": found.removed,
                "duplicate_groups": found.groups,
                "pairs": [(keys[a], keys[b], sim) for a, b, sim in found.pairs],
            }
            context.log.info(
                f"dedup: removed {found.removed} near-duplicates in {found.groups} groups"
            )
        try:
            if config.processes > 1:
                hierarchy = _build_with_torchrun(context, home, config, rows)
            else:
                hierarchy = build_hierarchy(
                    array, keys, out, config.hierarchy_config(), rows=rows, overwrite=True
                )
        except HierarchyError as exc:
            raise bad_input(str(exc)) from exc
        save_json(out / "dedup.json", dedup_info)
        metrics: dict[str, float] = {
            "seconds": time.perf_counter() - started,
            "points": len(hierarchy.rows()),
            "duplicates_removed": dedup_info["duplicates_removed"],
        }
        for level, stats in enumerate(hierarchy.stats):
            metrics[f"level_{level}.inertia"] = stats["inertia"]
            metrics[f"level_{level}.size_entropy"] = stats["size_entropy"]
            metrics[f"level_{level}.empty_clusters"] = stats["empty_clusters"]
            metrics.update({f"level_{level}.size_{k}": v for k, v in stats["sizes"].items()})
            run.log_artifact(hierarchy.level_dir(level) / "centroids.npy", f"level_{level:02d}")
            run.log_artifact(hierarchy.level_dir(level) / "stats.json", f"level_{level:02d}")
        run.log_metrics(metrics)
        run.log_artifact(out / "config.json")
        run.log_artifact(out / "summary.json")
        run.log_artifact(out / "dedup.json")
        assignments = hierarchy.level_dir(0) / "assignments.npy"
        run.set_tags(
            {
                "sslflow.hierarchy_uri": out.as_uri(),
                "sslflow.assignments_sha256": sha256_file(assignments),
                "sslflow.embeddings_sha256": sha256_file(source.path),
            }
        )
        metadata = {
            "levels": str(config.levels),
            "points": len(hierarchy.rows()),
            "duplicates_removed": dedup_info["duplicates_removed"],
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


class CuratedIndexConfig(dg.Config):
    """Balanced hierarchical sampling (see ``sslflow.curation.sampling``)."""

    target_size: int = Field(
        20_000,
        description="samples to select (the whole pool, with a warning, if larger)",
    )
    strategy: str = Field(
        "random",
        description="inside a leaf cluster: random, closest or farthest to its centroid",
    )
    seed: int = Field(0, description="seeds the remainder draws and random leaf picks")
    min_top_entropy: float = Field(
        0.9,
        description="asset check: minimum normalised entropy of curated counts over top-level clusters",
    )
    thumbnails: int = Field(
        3,
        description="report: thumbnails per top-level cluster (nearest samples to its centroid)",
    )


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
    try:
        strategy = LeafStrategy(config.strategy)
    except ValueError as exc:
        raise bad_input(
            f"unknown strategy {config.strategy!r}; valid: random, closest, farthest"
        ) from exc
    source = load_embeddings(home.asset_dir("embeddings"))
    keys, labels = source.keys(), source.labels()
    hierarchy = load_hierarchy(home.asset_dir("kmeans_hierarchy"))
    out = home.asset_dir("curated_index")
    upstream = upstream_run_ids(context, ["raw_shards", "embeddings", "kmeans_hierarchy"])
    curation_round = int(latest_metadata(context, "embeddings", ROUND_KEY) or 0)
    embedder = str(latest_metadata(context, "embeddings", "embedder") or "")
    with mlflow.start_run(context, "curated_index", upstream=upstream) as run:
        run.log_params(config.model_dump())
        run.set_tags({"sslflow.curation_round": curation_round, "sslflow.embedder": embedder})
        curated = sample_hierarchy(hierarchy, keys, config.target_size, strategy, config.seed)
        curated.save(out)
        summary = {**curated.summary(), "min_top_entropy": config.min_top_entropy}
        dedup = load_json(hierarchy.root / "dedup.json")
        summary["duplicates_removed"] = dedup["duplicates_removed"]
        if (labels >= 0).any():  # labels are only measured, never used to select
            pool_shares, curated_shares = class_shares(labels, curated.rows, int(labels.max()) + 1)
            summary["class_entropy_pool"] = normalised_entropy(pool_shares)
            summary["class_entropy_curated"] = normalised_entropy(curated_shares)
        save_json(out / "summary.json", summary)
        thumb_rows = thumbnail_rows(hierarchy, config.thumbnails)
        images = read_images(
            _raw_manifest(home), {keys[r] for rs in thumb_rows.values() for r in rs}
        )
        thumbnails = {
            c: [images[keys[r]] for r in rs if keys[r] in images] for c, rs in thumb_rows.items()
        }
        report = write_report(
            ReportInputs(
                hierarchy,
                curated,
                labels,
                source.meta().get("classes"),
                thumbnails,
                extra={"duplicates_removed": dedup["duplicates_removed"]},
                rounds=[*earlier_rounds(run), round_row(curation_round, embedder, summary)],
            ),
            out / "report",
        )
        quantiles = size_quantiles(curated.counts[0])
        metrics = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
        metrics.update({f"curated_leaf_size_{k}": v for k, v in quantiles.items()})
        run.log_metrics(metrics)
        run.log_artifact(out / "summary.json")
        _log_folder(run, out / "report", "report")
        run.set_tags(
            {
                "sslflow.curated_index_uri": out.as_uri(),
                "sslflow.curated_rows_sha256": sha256_file(out / "rows.npy"),
            }
        )
        metadata = {
            ROUND_KEY: curation_round,
            "selected": len(curated.rows),
            "entropy_top_pool": summary["entropy_top_pool"],
            "entropy_top_curated": summary["entropy_top_curated"],
            "report": dg.MetadataValue.path(str(report)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


ROUND_METRICS = (
    "selected",
    "entropy_top_pool",
    "entropy_top_curated",
    "class_entropy_pool",
    "class_entropy_curated",
)


def round_row(curation_round: int, embedder: str, values: dict[str, object]) -> dict[str, object]:
    """One row of the rounds table."""
    return {
        "round": curation_round,
        "embedder": embedder,
        **{k: values[k] for k in ROUND_METRICS if k in values},
    }


def earlier_rounds(run: TrackedRun, limit: int = 10) -> list[dict[str, object]]:
    """Earlier finished curated_index runs of the experiment, oldest first (for the rounds table)."""
    found = earlier_runs(
        run.client,
        run.experiment_id,
        {"sslflow.stage": "curated_index"},
        run.run_id,
        limit,
        finished_only=True,
    )
    return [
        round_row(
            int(r.data.tags.get("sslflow.curation_round", 0)),
            r.data.tags.get("sslflow.embedder", ""),
            r.data.metrics,
        )
        for r in reversed(found)
    ]


@dg.asset_check(
    asset=curated_index, description="curated counts are balanced over top-level clusters"
)
def curated_top_entropy(home: SslflowHome) -> dg.AssetCheckResult:
    summary = load_json(home.asset_dir("curated_index") / "summary.json")
    return dg.AssetCheckResult(
        passed=summary["entropy_top_curated"] >= summary["min_top_entropy"],
        metadata={
            "entropy_top_curated": summary["entropy_top_curated"],
            "entropy_top_pool": summary["entropy_top_pool"],
            "threshold": summary["min_top_entropy"],
        },
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
    source = SelectedSource(pool_source(_raw_manifest(home)), keys)
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


def _build_with_torchrun(
    context: dg.AssetExecutionContext,
    home: SslflowHome,
    config: KMeansHierarchyConfig,
    rows: np.ndarray | None,
) -> Hierarchy:
    """Build the hierarchy with ``config.processes`` torchrun ranks, launched through Dagster Pipes."""
    launch = home.path() / "launch" / "kmeans_hierarchy"
    launch.mkdir(parents=True, exist_ok=True)
    save_json(launch / "config.json", config.model_dump())
    arguments = [
        "--embeddings",
        str(home.asset_dir("embeddings")),
        "--out",
        str(home.asset_dir("kmeans_hierarchy")),
        "--config",
        str(launch / "config.json"),
    ]
    if rows is not None:
        save_npy(launch / "rows.npy", rows)
        arguments += ["--rows", str(launch / "rows.npy")]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={config.processes}",
        "--standalone",
        "-m",
        "sslflow.pipelines.assets.curation",
        *arguments,
    ]
    dg.PipesSubprocessClient().run(
        command=command, context=context, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    return load_hierarchy(home.asset_dir("kmeans_hierarchy"))


def hierarchy_main(argv: list[str] | None = None) -> None:
    """Entry point of every torchrun rank; rank 0 alone opens the Dagster Pipes channel."""
    import argparse

    import torch.distributed as dist

    parser = argparse.ArgumentParser(
        description="sslflow hierarchical k-means across torch.distributed ranks"
    )
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", required=True, help="kmeans_hierarchy config JSON")
    parser.add_argument("--rows", help="sorted embedding rows to cluster (after deduplication)")
    args = parser.parse_args(argv)
    config = KMeansHierarchyConfig(**load_json(Path(args.config)))
    source = load_embeddings(args.embeddings)
    rows = load_npy(Path(args.rows)) if args.rows else None
    dist.init_process_group("gloo")  # the sums are numpy on the CPU, whatever the accelerator
    try:

        def build() -> Hierarchy:
            return build_hierarchy(
                source.array(),
                source.keys(),
                args.out,
                config.hierarchy_config(),
                rows=rows,
                overwrite=True,
            )

        if dist.get_rank() != 0:
            build()
            return
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            hierarchy = build()
            pipes.log.info(f"built {len(hierarchy.stats)} levels on {dist.get_world_size()} ranks")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    hierarchy_main()
