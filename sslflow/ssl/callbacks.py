"""Lightning callbacks of a pretraining run: metrics handed to a hook on rank 0."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

MetricsHook = Callable[[dict[str, float], int], None]


class MetricsCallback(pl.Callback):
    """Hands metrics to ``hook`` on rank 0: step metrics every n steps, epoch metrics at epoch end.

    Each metric is reported at most once per step, so the kNN accuracy logged at the end of an
    epoch is reported without repeating that step's loss.
    """

    def __init__(self, hook: MetricsHook, every_n_steps: int) -> None:
        self.hook = hook
        self.every_n_steps = every_n_steps
        self._reported_at: dict[str, int] = {}

    def _report(self, trainer: pl.Trainer) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if torch.as_tensor(v).numel() == 1 and self._reported_at.get(k) != step
        }
        if metrics:
            self.hook(metrics, step)
            self._reported_at.update({k: step for k in metrics})

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._report(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)
