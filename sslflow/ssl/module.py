"""The LightningModule that trains any :class:`SSLMethod` on uint8 shard batches.

Lightning owns precision, gradient accumulation, DDP, checkpoints and the progress bar. This
module adds what Lightning's checkpoints miss for an *exact* resume: the data position
(recomputed from the restored global step), the RNG states, and a check that the
checkpoint belongs to the same configuration. Method state (queues, momentum encoders,
prototype-freeze counters) is in the method's ``state_dict`` and so in every checkpoint.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig

from sslflow.ssl.augment import ViewAugment
from sslflow.ssl.config import ConfigError, PretrainConfig
from sslflow.ssl.loader import ShardBatches
from sslflow.ssl.methods import SSLMethod

CHECKPOINT_KEY = "sslflow"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint is kept."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and lists (loadable with ``weights_only``)."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PretrainModule(pl.LightningModule):
    """Trains ``method`` on batches from ``batches``, making views with ``augment``.

    Args:
        config: the run's configuration (resolved: mean/std filled in).
        method: the SSL method (backbone + heads + loss + method state).
        augment: builds the method's views from uint8 batches on the training device.
        batches: the per-rank shard stream (one epoch per iteration).
        steps_per_epoch: optimiser steps per epoch.
        total_steps: optimiser steps of the whole run (schedule length).
    """

    def __init__(
        self,
        config: PretrainConfig,
        method: SSLMethod,
        augment: ViewAugment,
        batches: ShardBatches,
        steps_per_epoch: int,
        total_steps: int,
    ) -> None:
        super().__init__()
        self.config = config
        self.method = method
        self.augment = augment
        self.batches = batches
        self.batches.position = self._data_position
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.force_resume = False
        self._last_batch_end: float | None = None
        self._images_per_second = 0.0

    def train_dataloader(self) -> ShardBatches:
        return self.batches

    def _data_position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained): non-zero batches only after a mid-epoch
        resume."""
        done = (
            self.global_step - self.current_epoch * self.steps_per_epoch
        ) * self.config.accumulate_grad_batches
        return self.current_epoch, min(max(done, 0), len(self.batches))

    def on_train_epoch_start(self) -> None:
        self._last_batch_end = None

    def _generator(self, batch_idx: int) -> torch.Generator:
        """Augmentation randomness of one batch: a function of (seed, epoch, batch, rank) only."""
        index = self.current_epoch * len(self.batches) + batch_idx
        seed = (self.config.seed * 1_000_003 + index) * 1009 + self.global_rank
        return torch.Generator().manual_seed(seed % (2**63))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Loss of one uint8 batch (B, C, H, W): views, method loss, non-finite check, logs."""
        views = self.augment(batch, self._generator(batch_idx))
        loss, extra = self.method.training_step_loss(
            views, step=self.global_step, epoch=self.current_epoch
        )
        finite = bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}) with lr {self._lr():.3g}; "
                "training stopped, the last good checkpoint "
                "is kept. Lower lr, raise warmup_epochs or use precision=32-true"
            )
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, sync_dist=False)
        self.log("lr", self._lr(), prog_bar=True, on_step=True)
        for name, value in extra.items():
            self.log(name, float(value), on_step=True)
        return loss

    def _lr(self) -> float:
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, outputs: Any, batch: torch.Tensor, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None:
            rate = batch.shape[0] * self.trainer.world_size / max(now - self._last_batch_end, 1e-9)
            self._images_per_second = (
                rate if not self._images_per_second else 0.9 * self._images_per_second + 0.1 * rate
            )
            self.log("images_per_second", self._images_per_second, prog_bar=True, on_step=True)
        self._last_batch_end = now

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.before_optimizer_step(self.global_step)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.method.after_optimizer_step(self.global_step + 1, self.total_steps)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """SGD/AdamW/LARS without weight decay on biases and norms; warm-up then cosine per step."""
        cfg = self.config
        decay = [p for p in self.method.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.method.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum
            )
        elif cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        else:
            optimizer = LARS(groups, lr=cfg.lr, momentum=cfg.momentum)
        warmup = min(round(cfg.warmup_epochs * self.steps_per_epoch), max(self.total_steps - 1, 0))
        scheduler = CosineWarmupScheduler(
            optimizer, warmup_epochs=warmup, max_epochs=self.total_steps, end_value=cfg.min_lr_ratio
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save non-finite weights: ``last.ckpt`` then keeps the last good state.

        A divergent update can land on a checkpoint step while that step's loss was finite;
        the loss check alone would then save NaN weights as the state to resume from.
        """
        bad = [
            name
            for name, value in checkpoint["state_dict"].items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:
            raise NonFiniteLossError(
                f"non-finite weights at step {self.global_step} ({len(bad)} tensors, "
                f"e.g. {bad[0]}) with lr {self._lr():.3g}; not saved, the last good checkpoint "
                "is kept. Lower lr, raise warmup_epochs "
                "or use precision=32-true"
            )
        checkpoint[CHECKPOINT_KEY] = {"config": self.config.to_dict(), "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise ConfigError(
                "checkpoint was not written by sslflow pretraining (no 'sslflow' entry)"
            )
        differences = self.config.resume_differences(saved["config"])
        if differences and not self.force_resume:
            listed = "; ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in differences.items())
            raise ConfigError(
                f"checkpoint was trained with another config ({listed}); pass force=True to "
                "resume anyway"
            )
        set_rng_state(saved["rng"])


def steps_for(config: PretrainConfig, batches_per_rank_epoch: int) -> tuple[int, int, int]:
    """(batches per epoch used, optimiser steps per epoch, total optimiser steps).

    The epoch is cut to a multiple of ``accumulate_grad_batches`` so each step sees the same
    number of batches.
    """
    accumulate = config.accumulate_grad_batches
    steps_per_epoch = batches_per_rank_epoch // accumulate
    if steps_per_epoch < 1:
        raise ConfigError(
            f"an epoch has {batches_per_rank_epoch} batches per rank, fewer than "
            f"accumulate_grad_batches={accumulate}"
        )
    total = config.epochs * steps_per_epoch
    if config.max_steps > 0:
        total = min(total, config.max_steps)
    return steps_per_epoch * accumulate, steps_per_epoch, max(total, 1)
