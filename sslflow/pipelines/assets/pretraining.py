"""Pretraining asset: a self-supervised backbone trained on the curated (or raw) shards.

One process per node trains in-process. More processes per node (``devices > 1``) run
``sslflow.ssl.launch`` on ranks started by the ``torchrun`` resource
(:mod:`sslflow.pipelines.torchrun`) under Dagster Pipes; rank 0 logs per-step metrics to the
asset's MLflow run and streams its log back. Either way the asset then logs the checkpoint
(URI and sha256) and registers the backbone as ``sslflow-<method>`` with an alias.

The run folder is ``<home>/pretrained_model/<run name>`` with a default name derived from the
training config and the data version, so re-materialising after a crash resumes the run
exactly, and re-materialising a finished run costs only the export.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from sslflow.data import Manifest
from sslflow.pipelines.config import core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.instance import upstream_run_ids
from sslflow.pipelines.lineage import skip_when_unchanged
from sslflow.pipelines.metadata import run_metadata
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.torchrun import TorchrunLauncher
from sslflow.ssl.config import LEGACY_VALUES, RESUME_FREE_FIELDS, ConfigError, PretrainConfig
from sslflow.tracking import TrackedRun
from sslflow.tracking.registry import registry_name

DATA_ASSETS = ("curated_shards", "raw_shards")


class PretrainedModelConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        PretrainConfig,
        "PretrainFields",
        "The fields of sslflow.ssl.config.PretrainConfig, with its defaults.",
        exclude=("progress_bar", "strategy"),
    )
):
    """What to train, on which shards, and how: every ``PretrainConfig`` field plus where the
    data comes from and where the model goes."""

    data: Literal["auto", "curated_shards", "raw_shards"] = Field(
        "auto",
        description="shards to train on; auto = curated_shards when materialised, else raw_shards "
        "(curation is optional, and the demo must train either way)",
    )
    run_name: str = Field(
        "",
        description="run folder name; empty = derived from config and data (resumes after a crash)",
    )
    force_resume: bool = Field(False, description="resume a run folder even if its config differs")
    alias: str = Field(
        "current",
        description="registry alias moved to the new model version ('latest' is reserved)",
    )

    def pretrain_config(self) -> PretrainConfig:
        """The plain-Python training config; DDP when more than one process trains."""
        values = core_values(self, PretrainConfig)
        values["progress_bar"] = False
        values["strategy"] = "ddp" if self.devices * self.num_nodes > 1 else "auto"
        return PretrainConfig.from_dict(values)


def choose_data(home: SslflowHome, choice: str) -> tuple[str, Path]:
    """The data asset to train on and its manifest path (``auto``: curated if present)."""
    candidates = DATA_ASSETS if choice == "auto" else (choice,)
    for asset in candidates:
        manifest = home.asset_dir(asset) / "manifest.json"
        if manifest.exists():
            return asset, manifest
    wanted = " or ".join(candidates)
    raise bad_input(
        f"no {wanted} to train on under {home.path()}: materialise {candidates[-1]} first"
    )


def knn_manifests(home: SslflowHome, config: PretrainConfig) -> tuple[Path, Path] | None:
    """eval_split's train/test manifests when the kNN monitor is on (it needs eval_split)."""
    if config.knn_monitor_every_n_epochs <= 0:
        return None
    root = home.asset_dir("eval_split")
    paths = (root / "train" / "manifest.json", root / "test" / "manifest.json")
    if not all(path.exists() for path in paths):
        raise bad_input(
            f"knn_monitor_every_n_epochs > 0 needs eval_split under {root}: "
            "materialise eval_split first"
        )
    return paths


def run_folder_name(config: PretrainConfig, manifest: Manifest) -> str:
    """``<method>-<backbone>-<hash of training config and data version>``."""
    fields = {
        k: v
        for k, v in config.to_dict().items()
        if k not in RESUME_FREE_FIELDS and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])
    }
    digest = hashlib.sha256(
        json.dumps([fields, manifest.content_hash], sort_keys=True).encode()
    ).hexdigest()
    return f"{config.method}-{config.backbone}-{digest[:12]}"


def _train_with_torchrun(
    context: dg.AssetExecutionContext,
    torchrun: TorchrunLauncher,
    config: PretrainConfig,
    manifest_path: Path,
    run_dir: Path,
    run: TrackedRun,
    tracking_uri: str,
    force: bool,
    knn: tuple[Path, Path] | None,
) -> dict[str, Any]:
    """Run ``sslflow.ssl.launch`` on ``devices`` ranks per node; its ``result.json``."""
    from sslflow.ssl.launch import launch_arguments

    arguments = launch_arguments(
        config, manifest_path, run_dir, tracking_uri, run.run_id, force, knn
    )
    gpus = 0 if config.accelerator == "cpu" else config.devices
    torchrun.run_module(
        context, "sslflow.ssl.launch", arguments, config.devices, config.num_nodes, gpus
    )
    result_path = run_dir / "result.json"
    if not result_path.exists():
        raise dg.Failure(f"torchrun finished without {result_path}; see the rank logs above")
    return json.loads(result_path.read_text())


def _train_in_process(
    context: dg.AssetExecutionContext,
    config: PretrainConfig,
    manifest_path: Path,
    run_dir: Path,
    run: TrackedRun,
    force: bool,
    knn: tuple[Path, Path] | None,
) -> dict[str, Any]:
    from sslflow.ssl.train import pretrain

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        run.log_metrics(metrics, step=step)
        context.log.info(
            f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        )

    knn_data = None if knn is None else (Manifest.load(knn[0]), Manifest.load(knn[1]))
    return pretrain(
        config, manifest_path, run_dir, on_metrics=on_metrics, knn_data=knn_data, force=force
    ).to_dict()


@dg.asset(
    group_name="pretraining",
    code_version="1",
    kinds={"pytorch", "mlflow"},
    deps=[dg.AssetDep(asset) for asset in DATA_ASSETS],
    pool="gpu",
)
@skip_when_unchanged
def pretrained_model(
    context: dg.AssetExecutionContext,
    config: PretrainedModelConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
    torchrun: TorchrunLauncher,
) -> dg.MaterializeResult:
    """A self-supervised backbone: checkpoints under the sslflow home, the model in the MLflow
    registry."""
    from sslflow.models import load_backbone, log_backbone

    data_asset, manifest_path = choose_data(home, config.data)
    manifest = Manifest.load(manifest_path)
    try:
        train_config = config.pretrain_config()
        train_config.check()
    except ConfigError as exc:
        raise bad_input(f"bad pretraining config: {exc}") from exc
    knn = knn_manifests(home, train_config)
    run_dir = home.asset_dir("pretrained_model") / (
        config.run_name or run_folder_name(train_config, manifest)
    )
    context.log.info(
        f"training {train_config.method} / {train_config.backbone} on {data_asset} in {run_dir}"
    )
    upstream = upstream_run_ids(context, [data_asset])
    with mlflow.start_run(context, "pretrained_model", upstream=upstream) as run:
        run.log_params(
            {
                **train_config.to_dict(),
                "data": data_asset,
                "data_content_hash": manifest.content_hash,
            }
        )
        run.set_tags({"sslflow.run_dir": run_dir.as_uri(), "sslflow.trained_on": data_asset})
        run.log_shard_input(data_asset, manifest, "training")
        try:
            if train_config.devices > 1:
                result = _train_with_torchrun(
                    context,
                    torchrun,
                    train_config,
                    manifest_path,
                    run_dir,
                    run,
                    mlflow.resolved_uri(),
                    config.force_resume,
                    knn,
                )
            else:
                result = _train_in_process(
                    context, train_config, manifest_path, run_dir, run, config.force_resume, knn
                )
        except ConfigError as exc:
            raise bad_input(str(exc)) from exc
        checkpoint = Path(result["checkpoint_path"])
        run.set_tags(
            {
                "sslflow.checkpoint_uri": checkpoint.as_uri(),
                "sslflow.checkpoint_sha256": result["checkpoint_sha256"],
            }
        )
        run.log_artifact(run_dir / "config.json")
        run.log_artifact(run_dir / "result.json")
        headline = {
            "final_loss": result["final_loss"],
            "steps": result["steps"],
            "images_per_second": result["images_per_second"],
            "train_seconds": result["seconds"],
        }
        run.log_metrics(headline)
        logged = log_backbone(
            load_backbone(result["backbone_path"]),
            run.run_id,
            mlflow.resolved_uri(),
            registered_name=registry_name(train_config.method),
            alias=config.alias or None,
        )
        pinned = logged.version_uri or logged.model_uri
        run.set_tags(
            {
                "sslflow.model_uri": pinned,
                "sslflow.model_alias_uri": logged.registry_uri or "",
                "sslflow.image_size": result["config"]["image_size"],
                "sslflow.in_chans": result["config"]["in_chans"],
            }
        )
        metadata = {
            **headline,
            "trained_on": data_asset,
            "method": train_config.method,
            "backbone": train_config.backbone,
            "resumed_from_step": result["resumed_from_step"],
            "model_uri": pinned,
            "model_alias_uri": logged.registry_uri or "",
            "model_version": logged.version or "",
            "image_size": result["config"]["image_size"],
            "in_chans": result["config"]["in_chans"],
            "backbone_path": dg.MetadataValue.path(result["backbone_path"]),
            "checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "checkpoint_sha256": result["checkpoint_sha256"],
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)
