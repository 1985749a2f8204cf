"""Pretrain a backbone on shards: ``pretrain(config, data, run_dir)`` (the command line and
the torchrun ranks' entry point are in :mod:`sslflow.ssl.launch`).

A run folder holds everything of one run::

    run_dir/config.json         resolved PretrainConfig (compared on resume)
    run_dir/checkpoints/last.ckpt   Lightning checkpoint every n steps and at the end
    run_dir/backbone.pt         final backbone (``sslflow.models.save_backbone`` format)
    run_dir/result.json         what ``pretrain`` returned (written by rank 0)

Calling ``pretrain`` again on the same folder resumes exactly from ``last.ckpt``: weights,
optimiser, scheduler, method state (queues, momentum encoders, prototype counters), epoch
and position in the epoch's sample stream, RNG states. Under ``torchrun`` (or Lightning's
own DDP launcher with ``devices > 1``) every rank runs the same call; only rank 0 writes files
and reports metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from sslflow.data import Manifest, ShardDataset, geometry_of
from sslflow.data.blocks import BLOCK_MAX_SIDE
from sslflow.data.geometry import ImageGeometry
from sslflow.data.manifest import sha256_file
from sslflow.models import (
    CenterCropResize,
    FrozenBackbone,
    channel_stats,
    create_backbone,
    match_channels,
    save_backbone,
)
from sslflow.ssl.augment import AugmentConfig, ViewAugment
from sslflow.ssl.callbacks import MetricsCallback, MetricsHook
from sslflow.ssl.config import ConfigError, PretrainConfig
from sslflow.ssl.knn_monitor import KNNMonitor
from sslflow.ssl.loader import DeviceDecode, ShardBatches, batches_per_epoch, training_dataset
from sslflow.ssl.methods import SSLMethod, build_method
from sslflow.ssl.module import PretrainModule, steps_for

log = logging.getLogger(__name__)

STATS_SAMPLES = 512


@dataclass(frozen=True)
class PretrainResult:
    """Where a finished run left its files, and its headline numbers."""

    run_dir: Path
    backbone_path: Path
    checkpoint_path: Path
    checkpoint_sha256: str
    steps: int
    epochs: int
    final_loss: float
    images_per_second: float
    seconds: float
    resumed_from_step: int
    config: PretrainConfig
    rank_weight_max_diff: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["config"] = self.config.to_dict()
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def _world_size(config: PretrainConfig) -> int:
    """Processes in this run: torchrun's WORLD_SIZE when launched by it, else devices × nodes."""
    return int(os.environ.get("WORLD_SIZE", "0")) or config.world_size


def resolve_config(config: PretrainConfig, manifest: Manifest) -> PretrainConfig:
    """Fill in what comes from the data: ``auto`` image size and channels, samples per epoch,
    mean/std; check the crop size against the images.

    ``image_size`` auto is the 5th percentile of the images' shorter side, at most 224;
    ``in_chans`` auto is 3 when any image is colour, else 1. An explicit ``image_size`` larger
    than some images upsamples those (a warning gives how many); larger than the median image
    it is refused, since most crops would then be upsampled. Mean and std are measured on a
    seeded sample of at most 512 images after the same resize + centre crop training uses, so
    memory stays bounded whatever the image size.

    Raises:
        ConfigError: a crop larger than most images, or channels that cannot be converted.
    """
    geometry = geometry_of(manifest)
    image_size = config.image_size or geometry.image_size()
    in_chans = config.in_chans or geometry.channels
    where = f"the shards at {manifest.root} ({geometry.describe()})"
    if geometry.short_side(0.5) < image_size:
        raise ConfigError(
            f"image_size={image_size} is larger than most images in {where}: crops would be "
            "upsampled; "
            f"set image_size ≤ {geometry.short_side(0.5)}, or 0 (auto)"
        )
    smaller = geometry.smaller_than(image_size)
    if smaller:
        log.warning(
            "%d images in %s are smaller than image_size=%d and are upsampled",
            smaller,
            where,
            image_size,
        )
    if config.samples_per_epoch is None and manifest.total_samples < config.batch_size:
        raise ConfigError(
            f"the shards at {manifest.root} hold {manifest.total_samples} images, fewer than one "
            "batch "
            f"({config.batch_size}): set batch_size ≤ {manifest.total_samples}"
        )
    if (geometry.channels, in_chans) not in ((1, 1), (3, 3), (1, 3), (3, 1)):
        raise ConfigError(
            f"cannot train in_chans={in_chans} on {where}: only 1 and 3 channels are defined"
        )
    updates: dict[str, Any] = {
        "image_size": image_size,
        "in_chans": in_chans,
        "samples_per_epoch": config.samples_per_epoch or manifest.total_samples,
        "decode": resolve_decode(config, geometry),
    }
    if config.mean is None or config.std is None:
        mean, std = channel_stats(
            match_channels(_stats_sample(manifest, image_size, config.seed), in_chans)
        )
        updates.update(mean=config.mean or mean, std=config.std or std)
    resolved = dataclasses.replace(config, **updates)
    resolved.check()
    return resolved


def resolve_decode(config: PretrainConfig, geometry: ImageGeometry) -> str:
    """``decode: auto`` → ``device`` when training runs on CUDA and some images are stored as
    files (over ``BLOCK_MAX_SIDE``), so JPEG decoding moves off the CPU; else ``workers``."""
    if config.decode != "auto":
        return config.decode
    on_cuda = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    files = max(geometry.long_sides, default=0) > BLOCK_MAX_SIDE
    return "device" if on_cuda and files else "workers"


def _stats_sample(manifest: Manifest, image_size: int, seed: int) -> torch.Tensor:
    """A seeded sample of at most ``STATS_SAMPLES`` images, resized and cropped:
    uint8 (N, C, S, S)."""
    count = min(STATS_SAMPLES, manifest.total_samples)
    stream = ShardDataset(
        manifest,
        mode="resampled",
        samples_per_epoch=count,
        seed=seed,
        transform=CenterCropResize(image_size),
        rank=0,
        world_size=1,
        shuffle_buffer=min(256, count),
    )
    images = [sample["image"] for sample in stream]
    if not images:
        raise ConfigError(f"the shards at {manifest.root} hold no readable image")
    return torch.stack(images)


def _check_run_dir(config: PretrainConfig, run_dir: Path, force: bool) -> None:
    saved_path = run_dir / "config.json"
    if saved_path.exists():
        differences = config.resume_differences(json.loads(saved_path.read_text()))
        if differences and not force:
            listed = "; ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in differences.items())
            raise ConfigError(
                f"run folder {run_dir} was started with another config ({listed}); use a new run "
                "folder, "
                "or force=True to resume anyway"
            )


def pretrain(
    config: PretrainConfig,
    data: Manifest | str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    on_metrics: MetricsHook | None = None,
    callbacks: Sequence[pl.Callback] = (),
    knn_data: tuple[Manifest, Manifest] | None = None,
    force: bool = False,
) -> PretrainResult:
    """Pretrain ``config.method`` on the shards ``data``, resuming ``run_dir`` if it has a
    checkpoint.

    Args:
        config: the run's settings (checked before anything is read).
        data: a ``Manifest`` or a manifest path / shard folder.
        run_dir: the run folder (created; resumed when it holds ``checkpoints/last.ckpt``).
        on_metrics: called on rank 0 as ``on_metrics(metrics, step)`` every
            ``config.log_every_n_steps`` optimiser steps (e.g. to log to MLflow).
        callbacks: extra Lightning callbacks.
        knn_data: labelled (train, test) shard sets for the online kNN monitor; required when
            ``config.knn_monitor_every_n_epochs > 0``.
        force: resume even if the run folder was started with another config.

    Returns:
        A :class:`PretrainResult` (on every rank; files are written by rank 0).

    Raises:
        ConfigError: a configuration that cannot work, or a changed config on resume.
        NonFiniteLossError: the loss became NaN/inf (``last.ckpt`` keeps the last good state).
    """
    started = time.perf_counter()
    config.check()
    world = _world_size(config)
    if world != config.world_size:
        raise ConfigError(
            f"launched with WORLD_SIZE={world} but devices × num_nodes = {config.world_size}; "
            "make them agree"
        )
    if config.knn_monitor_every_n_epochs > 0 and knn_data is None:
        raise ConfigError(
            "knn_monitor_every_n_epochs > 0 needs knn_data=(labelled train, labelled test)"
        )
    manifest = data if isinstance(data, Manifest) else Manifest.load(data)
    config = resolve_config(config, manifest)
    run_dir = Path(run_dir)
    _check_run_dir(config, run_dir, force)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"

    pl.seed_everything(config.seed, workers=True, verbose=False)
    backbone, feature_dim = create_backbone(
        config.backbone, config.in_chans, config.image_size, config.small_stem
    )
    try:
        method = build_method(config.method, backbone, feature_dim, **config.method_options)
        augment = ViewAugment(
            method.views(),
            config.image_size,
            config.in_chans,
            config.mean or (),
            config.std or (),
            AugmentConfig.for_channels(config.in_chans, config.augment),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    samples = config.samples_per_epoch or manifest.total_samples
    rank_batches = batches_per_epoch(samples, config.rank_batch_size, world, config.num_workers)
    length, steps_per_epoch, total_steps = steps_for(config, rank_batches)
    on_device = config.decode == "device"
    dataset = training_dataset(
        manifest,
        samples,
        config.image_size,
        config.seed,
        batch_size=config.rank_batch_size,
        encoded=on_device,
    )
    decode = DeviceDecode(config.image_size, dataset.image_mode or "RGB") if on_device else None
    batches = ShardBatches(dataset, config.rank_batch_size, config.num_workers, length, decode)
    module = PretrainModule(config, method, augment, batches, steps_per_epoch, total_steps)
    module.force_resume = force

    all_callbacks: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step-{step}",
            save_top_k=0,
            save_last=True,
            every_n_train_steps=config.checkpoint_every_n_steps,
        ),
        *callbacks,
    ]
    if knn_data is not None and config.knn_monitor_every_n_epochs > 0:
        all_callbacks.append(
            KNNMonitor(knn_data[0], knn_data[1], config, config.knn_monitor_every_n_epochs)
        )
    if on_metrics is not None:  # after the kNN monitor, so its epoch-end accuracy is reported
        all_callbacks.append(MetricsCallback(on_metrics, config.log_every_n_steps))
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=cast(Any, config.precision),  # one of PRECISIONS (checked)
        max_epochs=config.epochs,
        max_steps=total_steps,
        accumulate_grad_batches=config.accumulate_grad_batches,
        callbacks=all_callbacks,
        logger=False,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        deterministic=config.deterministic,
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        log_every_n_steps=config.log_every_n_steps,
        num_sanity_val_steps=0,
    )
    resumed_from = 0
    if checkpoint.exists():
        resumed_from = int(
            torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
        )
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    trainer.fit(
        module, ckpt_path=str(checkpoint) if checkpoint.exists() else None, weights_only=True
    )
    trainer.save_checkpoint(
        checkpoint, weights_only=False
    )  # full state: exact resume needs the optimiser

    backbone_path = run_dir / "backbone.pt"
    loss = trainer.callback_metrics.get("loss")
    result = PretrainResult(
        run_dir=run_dir,
        backbone_path=backbone_path,
        checkpoint_path=checkpoint,
        checkpoint_sha256="",
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        final_loss=float(loss) if loss is not None else float("nan"),
        images_per_second=float(trainer.callback_metrics.get("images_per_second", 0.0)),
        seconds=time.perf_counter() - started,
        resumed_from_step=resumed_from,
        config=config,
        rank_weight_max_diff=rank_weight_difference(trainer, method.backbone),
    )
    if trainer.is_global_zero:
        save_backbone(frozen_copy(method, config), backbone_path)
        result = dataclasses.replace(result, checkpoint_sha256=sha256_file(checkpoint))
        (run_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def frozen_copy(method: SSLMethod, config: PretrainConfig) -> FrozenBackbone:
    """A float32 CPU copy of the method's backbone, ready to embed; training goes on untouched."""
    return FrozenBackbone(
        copy.deepcopy(method.backbone).cpu().float(),
        config.backbone,
        config.in_chans,
        config.image_size,
        config.mean or (),
        config.std or (),
        method.feature_dim,
        config.small_stem,
    )


def rank_weight_difference(trainer: pl.Trainer, module: torch.nn.Module) -> float:
    """Largest difference between ranks of per-tensor parameter sums (0: DDP kept them in sync)."""
    if trainer.world_size < 2:
        return 0.0
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(
        trainer.strategy.root_device
    )
    gathered = trainer.strategy.all_gather(sums)  # (world, tensors)
    return float((gathered - gathered[0]).abs().max())
