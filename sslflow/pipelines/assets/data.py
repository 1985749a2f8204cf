"""Data assets: the raw pretraining pool and the labelled evaluation split, as shard sets."""

import hashlib
import time
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from sslflow.data import Manifest, WriterConfig, open_source, write_shards
from sslflow.data.samples import Source, SourceError
from sslflow.data.sources import ConcatSource
from sslflow.pipelines.config import core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.lineage import INPUT_FINGERPRINT, input_fingerprint, reuse_if_unchanged
from sslflow.pipelines.metadata import run_metadata, shard_set_metadata, shard_set_metrics
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.tracking import TrackedRun


class ShardWriterConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        WriterConfig,
        "WriterFields",
        "The fields of sslflow.data.writer.WriterConfig, with its defaults.",
    )
):
    """How an asset packs samples into shards (every asset that writes a shard set)."""

    def writer(self) -> WriterConfig:
        """The writer settings, checked (a ValueError names the bad field)."""
        writer = WriterConfig(**core_values(self, WriterConfig))
        writer.check()
        return writer


class SourceConfig(ShardWriterConfig):
    """Where images come from (see ``sslflow.data.open_source``) and how they are written."""

    source: str = Field(
        "fashion-mnist",
        description="fashion-mnist, cifar10, cifar100, image-folder, digits or shards",
    )
    path: str = Field(
        "", description="folder, manifest or URL list; empty = the source's default lookup"
    )
    download: bool = Field(
        False, description="let torchvision download Fashion-MNIST when not found locally"
    )
    allow_pipe: bool = Field(
        False,
        description="shards: run the pipe: commands named in path (or in the URL list it names) "
        "as shell commands; set it only for a path you wrote yourself (inbox entries never run "
        "commands)",
    )
    overwrite: bool = Field(
        True,
        description="replace the asset's shard set when the source or config changed "
        "(false: refuse, keep the old set)",
    )

    def open(self, split: str, download_root: Path) -> Source:
        return open_source(
            self.source, self.path or None, split, self.download, download_root, self.allow_pipe
        )


class RawShardsConfig(SourceConfig):
    split: Literal["train", "test", "all"] = Field(
        "train",
        description="train, test or all: the official split (fashion-mnist, cifar, digits) or "
        "the train/ or test/ sub-folder of an image folder that has both; the default keeps test "
        "images out of pretraining. A folder without train/ and test/ is one pool (train and all "
        "read it whole)",
    )
    include_inbox: bool = Field(
        True,
        description="add every ingested inbox partition (inbox_shards) to the pool, its keys "
        "prefixed inbox-<partition>-, so a re-curation after drift curates the new data too",
    )


def inbox_parts(home: SslflowHome) -> list[tuple[str, Source]]:
    """``(key prefix, source)`` of each ingested inbox partition, in partition order."""
    root = home.asset_dir("inbox_shards")
    manifests = sorted(root.glob("*/manifest.json")) if root.is_dir() else []
    return [(f"inbox-{path.parent.name}", open_source("shards", str(path))) for path in manifests]


def _write_tracked(
    context: dg.AssetExecutionContext,
    source: Source,
    out: Path,
    config: SourceConfig,
    run: TrackedRun,
) -> Manifest:
    started = time.perf_counter()
    manifest = write_shards(
        source,
        out,
        **vars(config.writer()),
        overwrite=config.overwrite,
        on_shard=lambda info: context.log.info(f"wrote {info.name}: {info.samples} samples"),
    )
    seconds = time.perf_counter() - started
    prefix = f"{out.name}." if out.name in ("train", "test") else ""
    run.log_metrics({f"{prefix}{k}": v for k, v in shard_set_metrics(manifest).items()})
    run.log_metrics({f"{prefix}write_seconds": seconds})
    run.log_artifact(out / "manifest.json", artifact_path=out.name)
    run.set_tags(
        {
            f"sslflow.{prefix}shards_uri": out.as_uri(),
            f"sslflow.{prefix}content_hash": manifest.content_hash,
        }
    )
    for skip in manifest.skipped[:20]:
        context.log.warning(f"skipped {skip['where']}: {skip['reason']}")
    if manifest.geometry is not None:
        context.log.info(f"{out.name}: {manifest.geometry.describe()}")
    return manifest


def raw_manifest(home: SslflowHome) -> Manifest:
    """The raw pool's manifest, for the assets that read raw_shards."""
    path = home.asset_dir("raw_shards") / "manifest.json"
    if not path.is_file():
        raise bad_input(f"no raw_shards manifest at {path}: materialise raw_shards first")
    return Manifest.load(path)


@dg.asset(
    group_name="data",
    code_version="1",
    kinds={"webdataset", "mlflow"},
    deps=[dg.AssetDep("inbox_shards")],  # every ingested partition joins the pool (include_inbox)
)
def raw_shards(
    context: dg.AssetExecutionContext,
    config: RawShardsConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """The unlabelled pretraining pool as WebDataset shards with a manifest (labels kept if known):
    the configured source, then the ingested inbox partitions."""
    try:
        source: Source = config.open(config.split, home.path() / "downloads")
        config.writer()
        inbox = inbox_parts(home) if config.include_inbox else []
    except (SourceError, ValueError) as exc:
        raise bad_input(str(exc)) from exc
    if inbox:
        context.log.info(
            f"pool: {source.name} plus inbox partitions {', '.join(p for p, _ in inbox)}"
        )
        source = ConcatSource([("", source), *inbox])
    out = home.asset_dir("raw_shards")
    inputs = input_fingerprint(context, config, extra={"source": source.describe()})
    reused = reuse_if_unchanged(context, inputs, [out / "manifest.json"])
    if reused:
        return reused
    with mlflow.start_run(context, "raw_shards") as run:
        run.log_params(config.model_dump())
        manifest = _write_tracked(context, source, out, config, run)
        metadata = {**shard_set_metadata(manifest, run), INPUT_FINGERPRINT: inputs}
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(manifest.content_hash)
    )


class EvalSplitConfig(SourceConfig):
    """A labelled source with a train/test split: the official one (fashion-mnist, cifar, digits),
    or ``<path>/train/<class>/…`` and ``<path>/test/<class>/…`` for an image folder, and
    ``<path>/train`` and ``<path>/test`` shard sets for shards."""


def _split_source(config: EvalSplitConfig, split: str, download_root: Path) -> Source:
    """The ``split`` half of the evaluation source (see :class:`EvalSplitConfig`)."""
    if config.source in ("image-folder", "shards"):
        layout = (
            "train/<class>/… and test/<class>/…"
            if config.source == "image-folder"
            else "train/ and test/ shard sets"
        )
        if not config.path or not all(
            (Path(config.path) / part).is_dir() for part in ("train", "test")
        ):
            raise SourceError(
                f"eval_split with {config.source} needs a path holding {layout} "
                f"(got {config.path or 'no path'})"
            )
        if config.source == "shards":
            return open_source("shards", str(Path(config.path) / split))
    return config.open(split, download_root)


@dg.asset(group_name="data", code_version="1", kinds={"webdataset", "mlflow"})
def eval_split(
    context: dg.AssetExecutionContext,
    config: EvalSplitConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Labelled train and test shard sets used by the probes (Fashion-MNIST: the official
    60k/10k)."""
    try:
        sources = {
            split: _split_source(config, split, home.path() / "downloads")
            for split in ("train", "test")
        }
        config.writer()
    except (SourceError, ValueError) as exc:
        raise bad_input(str(exc)) from exc
    for split, source in sources.items():
        if source.classes is None:
            raise bad_input(
                f"eval_split needs labels, but the {split} source {source.describe()} has none"
            )
    root = home.asset_dir("eval_split")
    inputs = input_fingerprint(
        context, config, extra={s: src.describe() for s, src in sources.items()}
    )
    reused = reuse_if_unchanged(
        context, inputs, [root / "train" / "manifest.json", root / "test" / "manifest.json"]
    )
    if reused:
        return reused
    with mlflow.start_run(context, "eval_split") as run:
        run.log_params(config.model_dump())
        manifests = {
            split: _write_tracked(context, src, root / split, config, run)
            for split, src in sources.items()
        }
        metadata: dict[str, Any] = {
            "samples": sum(m.total_samples for m in manifests.values()),
            "classes": ", ".join(manifests["train"].classes or []),
            INPUT_FINGERPRINT: inputs,
            **run_metadata(run),
        }
        for split, manifest in manifests.items():
            shown = shard_set_metadata(manifest, run)
            metadata.update(
                {
                    f"{split}_{k}": shown[k]
                    for k in (
                        "samples",
                        "shards",
                        "skipped",
                        "total_size",
                        "manifest",
                        "first_shards",
                    )
                }
            )
    version = hashlib.sha256(
        "".join(m.content_hash for m in manifests.values()).encode()
    ).hexdigest()
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))
