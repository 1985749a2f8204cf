"""Training batches streamed from shards, resumable in the middle of an epoch.

``ShardDataset(mode="resampled")`` draws a fixed number of samples per epoch whose order
depends only on (seed, epoch, rank, worker); the DataLoader takes batches from its workers
in turn. So the k-th batch of an epoch is the same in every run, and resuming at batch k
means starting the epoch's stream again and dropping its first k batches (decoding only:
augmentation happens later, on the training device).

Two ways to decode (``PretrainConfig.decode``): the workers decode and cut whole batches from
blocks (``workers``), or the workers only parse tars and each batch of encoded images is
decoded on the training device by :func:`sslflow.data.decoding.decode_batch` (``device``:
nvJPEG on a GPU, for photos).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslflow.data import Manifest, ShardDataset
from sslflow.data.decoding import decode_batch
from sslflow.devices import compute_device
from sslflow.models.preprocess import CenterCropResize


def collate_images(samples: list[dict[str, Any]]) -> torch.Tensor:
    """Stack the images of a list of samples: uint8 (B, C, H, W); keys and labels are dropped."""
    return torch.stack([sample["image"] for sample in samples])


def encoded_batch(samples: list[dict[str, Any]]) -> tuple[list[str], list[Any]]:
    """Keys and images of a list of ``decode="encoded"`` samples (bytes, or block tensors)."""
    return [sample["key"] for sample in samples], [sample["image"] for sample in samples]


@dataclass(frozen=True)
class DeviceDecode:
    """Decode each batch of encoded images on the training device, resized to ``image_size``.

    ``device`` None is the current CUDA device when there is one (the rank's, once Lightning
    has set it), else the CPU.
    """

    image_size: int
    mode: str
    device: str | None = None

    def __call__(self, batch: tuple[list[str], list[Any]]) -> torch.Tensor:
        keys, images = batch
        device = torch.device(self.device) if self.device else compute_device()
        return decode_batch(images, self.mode, CenterCropResize(self.image_size), device, keys)


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
        decode: None when ``dataset`` cuts decoded batches itself; else a ``decode="encoded"``
            dataset whose samples the DataLoader groups ``batch_size`` at a time (per worker,
            dropping its last incomplete batch) and ``decode`` turns into a uint8 batch.

    Attributes:
        position: called when an epoch's iteration starts (lazily, at the first batch), returns
            ``(epoch, batches of it already trained)``. The trainer sets it; Lightning creates
            the iterator before it restores mid-epoch state and skips ``on_train_epoch_start``
            on a mid-epoch restart, so the position is read at the first ``next()``.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        batch_size: int,
        num_workers: int,
        length: int,
        decode: DeviceDecode | None = None,
    ) -> None:
        if length < 1:
            raise ValueError(
                f"an epoch holds no full batch of {batch_size} per rank: raise samples_per_epoch "
                f"({dataset.samples_per_epoch}) or lower batch_size / num_workers"
            )
        if decode is None and dataset.batch_size != batch_size:
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
        self.decode = decode
        self.position: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, skip = self.position()
        if not 0 <= skip <= self.length:
            raise ValueError(f"cannot skip {skip} batches of an epoch of {self.length}")
        self.shards.set_epoch(epoch)
        prefetch = 4 if self.num_workers else None
        if self.decode is None:
            loader = DataLoader(
                self.shards,
                batch_size=None,  # the workers cut whole batches (ShardDataset's batch_size)
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
                prefetch_factor=prefetch,
            )
        else:
            loader = DataLoader(
                self.shards,
                batch_size=self.batch_size,
                drop_last=True,
                collate_fn=encoded_batch,
                num_workers=self.num_workers,
                prefetch_factor=prefetch,
            )
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator)  # encoded batches are skipped undecoded
        for _ in range(self.length - skip):
            batch = next(iterator)
            yield batch["image"] if self.decode is None else self.decode(batch)


def training_dataset(
    manifest: Manifest,
    samples_per_epoch: int,
    image_size: int,
    seed: int,
    shuffle_buffer: int = 1000,
    batch_size: int | None = None,
    encoded: bool = False,
) -> ShardDataset:
    """The resampled shard stream used for pretraining: uint8 tensors in the set's one colour
    mode, resized and centre-cropped to ``image_size`` in the worker (views are cut later,
    batched, by :class:`~sslflow.ssl.augment.ViewAugment`); with ``batch_size``, whole batches
    cut from blocks (what :class:`ShardBatches` reads); ``encoded``: samples left encoded for
    :class:`DeviceDecode` (no transform, no batches)."""
    return ShardDataset(
        manifest,
        mode="resampled",
        samples_per_epoch=samples_per_epoch,
        seed=seed,
        decode="encoded" if encoded else "tensor",
        transform=None if encoded else CenterCropResize(image_size),
        on_error="skip",
        shuffle_buffer=shuffle_buffer,
        batch_size=None if encoded else batch_size,
    )
