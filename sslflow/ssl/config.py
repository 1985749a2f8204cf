"""The pretraining configuration: one typed dataclass, checked before any work starts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Optimizer = Literal["sgd", "adamw", "lars"]
OPTIMIZERS = ("sgd", "adamw", "lars")
DECODERS = ("auto", "workers", "device")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")

# Fields that may differ when a run folder is resumed: they change how the run is observed, not
# what is trained. ``num_workers`` is not one: each DataLoader worker draws its own sample
# stream and drops its own last partial batch, so another worker count trains on other batches.
RESUME_FREE_FIELDS = frozenset(
    {"checkpoint_every_n_steps", "knn_monitor_every_n_epochs", "log_every_n_steps", "progress_bar"}
)


# Fields added after run folders were first written, with the value every older run trained
# with: a saved config without the field trained that way, and a run folder's name leaves the
# field out at that value, so run folders from before the field existed still resume.
LEGACY_VALUES: dict[str, Any] = {"decode": "workers"}


class ConfigError(ValueError):
    """A pretraining configuration that cannot work; raised before training starts."""


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (stored in the run folder and checkpoints).

    Attributes:
        method: SSL method name (a key of ``sslflow.ssl.methods.METHODS``).
        method_options: overrides of the method's config dataclass fields.
        backbone: timm model name.
        small_stem: ResNet 3×3 stride-1 stem without max-pool: better features on images below
            ~64 px but ~10× the compute of timm's stem, so off by default on CPU.
        image_size: side of the global views; 0 = auto: the 5th percentile of the images'
            shorter side, at most 224 (each image is resized and centre-cropped to it).
        in_chans: backbone input channels; 0 = auto: 3 when any image is colour, else 1.
        mean: per-channel normalisation mean on [0, 1]; None = measured on a seeded sample.
        std: per-channel normalisation std; None = measured on a seeded sample.
        epochs: passes of ``samples_per_epoch`` samples.
        max_steps: stop after this many optimiser steps (-1 = epochs × steps per epoch); the
            learning-rate schedule spans ``min(max_steps, epochs × steps per epoch)``.
        batch_size: global batch per forward pass, summed over all ranks (must divide evenly).
        samples_per_epoch: samples drawn (with replacement) per epoch; None = the shard set size.
        optimizer: ``sgd``, ``adamw`` or ``lars`` (lightly's LARS, for large batches).
        lr: peak learning rate (after warm-up).
        weight_decay: L2 penalty; biases and norm parameters get none.
        momentum: SGD/LARS momentum.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: final learning rate of the cosine decay as a fraction of ``lr``.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed`` ...).
        accumulate_grad_batches: forward passes per optimiser step.
        accelerator: ``auto``, ``cpu``, ``gpu`` ...
        devices: processes per node (DDP when > 1).
        num_nodes: nodes (DDP across nodes via torchrun).
        strategy: Lightning strategy; ``auto`` picks DDP when there is more than one process.
        num_workers: DataLoader workers per rank decoding shards; part of what is trained (each
            worker draws its own sample stream), so a run folder resumes only with the same.
        decode: where images are decoded: ``workers`` (the DataLoader workers, batches cut from
            blocks), ``device`` (workers only parse tars; each batch of JPEGs is decoded on the
            training device, by nvJPEG on a GPU) or ``auto`` (``device`` when training on CUDA
            and the shards hold images over 64 px, i.e. stored as files rather than blocks;
            else ``workers``). Resolved before the run starts; part of what is trained.
        checkpoint_every_n_steps: save ``last.ckpt`` every n optimiser steps (and at the end).
        log_every_n_steps: metrics reported to the metrics hook every n steps.
        knn_monitor_every_n_epochs: online kNN accuracy on a small labelled set (0 = off).
        seed: seeds weights, data order and augmentation.
        deterministic: ask torch for deterministic kernels (slower; for exact-resume tests).
        progress_bar: show Lightning's progress bar (loss, lr, images/s).
        augment: overrides of ``sslflow.ssl.augment.AugmentConfig`` fields (colour jitter and
            random grayscale are on by default for RGB input, off for grey).
    """

    method: str = "simclr"
    method_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet10t"
    small_stem: bool = False
    image_size: int = 0
    in_chans: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    epochs: int = 10
    max_steps: int = -1
    batch_size: int = 256
    samples_per_epoch: int | None = None
    optimizer: Optimizer = "sgd"
    lr: float = 0.06
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 2
    decode: str = "auto"
    checkpoint_every_n_steps: int = 100
    log_every_n_steps: int = 10
    knn_monitor_every_n_epochs: int = 0
    seed: int = 0
    deterministic: bool = False
    progress_bar: bool = True
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mean is not None:
            self.mean = tuple(float(v) for v in self.mean)
        if self.std is not None:
            self.std = tuple(float(v) for v in self.std)

    @property
    def world_size(self) -> int:
        """Training processes in total (devices × nodes)."""
        return self.devices * self.num_nodes

    @property
    def rank_batch_size(self) -> int:
        """Batch per rank per forward pass."""
        return self.batch_size // self.world_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        """Build from a dict, naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown pretraining option(s) {unknown}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def check(self) -> None:
        """Fail on settings that cannot work, before data is read or a model is built.

        Raises:
            ConfigError: with the field, the value and what to do.
        """
        from sslflow.models.backbones import check_backbone_name
        from sslflow.ssl.augment import AugmentConfig
        from sslflow.ssl.methods import METHODS

        if self.method.lower() not in METHODS:
            raise ConfigError(
                f"unknown method {self.method!r}; valid methods: {', '.join(sorted(METHODS))}"
            )
        try:
            check_backbone_name(self.backbone)
            AugmentConfig.for_channels(
                self.in_chans or 3, self.augment
            )  # auto: checked again once known
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc
        for name, value in (("image_size", self.image_size), ("in_chans", self.in_chans)):
            if value < 0:
                raise ConfigError(
                    f"{name} must be 0 (auto, from the data) or positive, got {value}"
                )
        if self.decode not in DECODERS:
            raise ConfigError(f"decode {self.decode!r} is not one of {', '.join(DECODERS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "accumulate_grad_batches": self.accumulate_grad_batches,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "checkpoint_every_n_steps": self.checkpoint_every_n_steps,
            "log_every_n_steps": self.log_every_n_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if (
            self.lr <= 0
            or self.weight_decay < 0
            or not 0 <= self.min_lr_ratio <= 1
            or self.warmup_epochs < 0
        ):
            raise ConfigError(
                "need lr > 0, weight_decay ≥ 0, 0 ≤ min_lr_ratio ≤ 1, warmup_epochs ≥ 0; got "
                f"lr={self.lr}, weight_decay={self.weight_decay}, "
                f"min_lr_ratio={self.min_lr_ratio}, warmup_epochs={self.warmup_epochs}"
            )
        if self.batch_size % self.world_size:
            raise ConfigError(
                f"global batch_size {self.batch_size} is not divisible across "
                f"{self.world_size} ranks ({self.devices} devices × {self.num_nodes} nodes); "
                f"use a multiple of {self.world_size}"
            )
        if self.rank_batch_size < 2:
            raise ConfigError(
                f"batch per rank is {self.rank_batch_size}; contrastive losses need at least 2"
            )
        for name, stats in (("mean", self.mean), ("std", self.std)):
            if stats is not None and self.in_chans and len(stats) != self.in_chans:
                raise ConfigError(f"{name} has {len(stats)} values but in_chans={self.in_chans}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < self.batch_size:
            raise ConfigError(
                f"samples_per_epoch={self.samples_per_epoch} is smaller than one global batch "
                f"({self.batch_size})"
            )

    def resume_differences(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields that differ from a saved config, ignoring :data:`RESUME_FREE_FIELDS`.

        Returns:
            ``{field: (saved value, current value)}``.
        """
        current = self.to_dict()
        saved = {**LEGACY_VALUES, **saved}
        return {
            key: (saved.get(key), value)
            for key, value in current.items()
            if key not in RESUME_FREE_FIELDS and saved.get(key) != value
        }
