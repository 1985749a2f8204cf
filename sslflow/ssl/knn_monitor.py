"""Online kNN monitor: weighted kNN accuracy of the backbone on a small labelled set, every n
epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from sslflow.data import Manifest, ShardDataset
from sslflow.models.preprocess import CenterCropResize, match_channels, normalise
from sslflow.ssl.config import PretrainConfig

if TYPE_CHECKING:
    from sslflow.ssl.module import PretrainModule


def load_labelled(
    manifest: Manifest, image_size: int, limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``limit`` images and labels of a labelled shard set: uint8 (N, C, S, S), int64 (N,)."""
    images, labels = [], []
    resize = CenterCropResize(image_size)
    for sample in ShardDataset(manifest, mode="finite", decode="tensor", rank=0, world_size=1):
        images.append(resize(sample["image"]))
        labels.append(sample["label"])
        if len(images) >= limit:
            break
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


class KNNMonitor(pl.Callback):
    """Logs ``knn_top1`` (k=20, T=0.07, cosine on L2-normalised features) on rank 0.

    The images (at most ``limit`` per split) are read once and kept in memory; features are
    computed in eval mode, so BatchNorm statistics are not touched.
    """

    def __init__(
        self,
        train: Manifest,
        test: Manifest,
        config: PretrainConfig,
        every_n_epochs: int,
        k: int = 20,
        temperature: float = 0.07,
        limit: int = 2000,
    ) -> None:
        if not train.labelled or not test.labelled:
            raise ValueError("the kNN monitor needs labelled train and test shard sets")
        self.train, self.test = train, test
        self.config = config
        self.every_n_epochs = every_n_epochs
        self.k, self.temperature, self.limit = k, temperature, limit
        self._data: tuple[torch.Tensor, ...] | None = None

    def _features(
        self, backbone: torch.nn.Module, images: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), 512):
            x = match_channels(
                images[start : start + 512].to(device).float().div_(255.0), self.config.in_chans
            )
            x = normalise(x, self.config.mean or (), self.config.std or ())
            chunks.append(F.normalize(backbone(x).float(), dim=1))
        return torch.cat(chunks)

    def accuracy(self, backbone: torch.nn.Module, device: torch.device) -> float:
        """Top-1 weighted kNN accuracy of ``backbone`` (left in the mode it was in)."""
        if self._data is None:
            self._data = (
                *load_labelled(self.train, self.config.image_size, self.limit),
                *load_labelled(self.test, self.config.image_size, self.limit),
            )
        train_x, train_y, test_x, test_y = self._data
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            bank = self._features(backbone, train_x, device)
            query = self._features(backbone, test_x, device)
        backbone.train(was_training)
        classes = int(max(train_y.max(), test_y.max())) + 1
        predicted = knn_predict(
            query, bank.T, train_y.to(device), classes, knn_k=self.k, knn_t=self.temperature
        )
        return float((predicted[:, 0].cpu() == test_y).float().mean())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        module = cast("PretrainModule", pl_module)
        accuracy = self.accuracy(module.method.backbone, module.device)
        pl_module.log("knn_top1", accuracy, rank_zero_only=True)
