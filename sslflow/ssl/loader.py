"""Training batches streamed from shards, resumable in the middle of an epoch.

``ShardDataset(mode="resampled")`` draws a fixed number of samples per epoch whose order
depends only on (seed, epoch, rank, worker); the DataLoader takes batches from its workers
in turn. So the k-th batch of an epoch is the same in every run, and resuming at batch k
means starting the epoch's stream again and dropping its first k batches (decoding only:
augmentation happens later, on the training device).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslflow.data import Manifest, ShardDataset
from sslflow.models.preprocess import CenterCropResize


def collate_images(samples: list[dict[str, Any]]) -> torch.Tensor:
    """Stack the images of a list of samples: uint8 (B, C, H, W); keys and labels are dropped."""
    return torch.stack([sample["image"] for sample in samples])


def _slot_quota(total: int, slot: int, slots: int) -> int:
    """Samples ``ShardDataset`` gives to one (rank, worker) slot per epoch in resampled mode."""
    return total // slots + (1 if slot < total % slots else 0)


def batches_per_epoch(
    samples_per_epoch: int, rank_batch: int, world_size: int, num_workers: int
) -> int:
    """Full batches every rank can take per epoch (the minimum over ranks: DDP needs equal counts).

    Each DataLoader worker batches its own quota of samples and drops its incomplete batch.
    """
    workers = max(1, num_workers)
    slots = world_size * workers
    per_rank = [
        sum(
            _slot_quota(samples_per_epoch, rank * workers + w, slots) // rank_batch
            for w in range(workers)
        )
        for rank in range(world_size)
    ]
    return min(per_rank)


class ShardBatches:
    """An epoch of uint8 image batches per rank, with a fixed length and a resumable position.

    Args:
        dataset: a resampled ``ShardDataset``.
        batch_size: batch per rank.
        num_workers: DataLoader workers decoding shards.
        length: batches per epoch (see :func:`batches_per_epoch`).

    Attributes:
        position: called when an epoch's iteration starts (lazily, at the first batch), returns
            ``(epoch, batches of it already trained)``. The trainer sets it; Lightning creates
            the iterator before it restores mid-epoch state and skips ``on_train_epoch_start``
            on a mid-epoch restart, so the position is read at the first ``next()``.
    """

    def __init__(
        self, dataset: ShardDataset, batch_size: int, num_workers: int, length: int
    ) -> None:
        if length < 1:
            raise ValueError(
                f"an epoch holds no full batch of {batch_size} per rank: raise samples_per_epoch "
                f"({dataset.samples_per_epoch}) or lower batch_size / num_workers"
            )
        if dataset.batch_size != batch_size:
            raise ValueError(
                f"ShardBatches of {batch_size} needs a ShardDataset cutting batches of that size, "
                f"got batch_size={dataset.batch_size}"
            )
        # Not called ``dataset``: Lightning would then warn that an IterableDataset's length may
        # be wrong across workers, which is what ``batches_per_epoch`` already accounts for.
        self.shards = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.length = length
        self.position: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, skip = self.position()
        if not 0 <= skip <= self.length:
            raise ValueError(f"cannot skip {skip} batches of an epoch of {self.length}")
        self.shards.set_epoch(epoch)
        loader = DataLoader(
            self.shards,
            batch_size=None,  # the workers cut whole batches (ShardDataset's batch_size)
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if self.num_workers else None,
        )
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator)
        for _ in range(self.length - skip):
            yield next(iterator)["image"]


def training_dataset(
    manifest: Manifest,
    samples_per_epoch: int,
    image_size: int,
    seed: int,
    shuffle_buffer: int = 1000,
    batch_size: int | None = None,
) -> ShardDataset:
    """The resampled shard stream used for pretraining: uint8 tensors in the set's one colour
    mode, resized and centre-cropped to ``image_size`` in the worker (views are cut later,
    batched, by :class:`~sslflow.ssl.augment.ViewAugment`); with ``batch_size``, whole batches
    cut from blocks (what :class:`ShardBatches` reads)."""
    return ShardDataset(
        manifest,
        mode="resampled",
        samples_per_epoch=samples_per_epoch,
        seed=seed,
        decode="tensor",
        transform=CenterCropResize(image_size),
        on_error="skip",
        shuffle_buffer=shuffle_buffer,
        batch_size=batch_size,
    )
