"""Pretraining benchmarks, each against a baseline measured in the same process.

1. augment: batched tensor views (``ViewAugment``) vs lightly's per-sample PIL ``SimCLRTransform``.
2. step: images/s of sslflow's Lightning training (shards → DataLoader → views → SimCLR step)
   vs a plain PyTorch loop with the same timm backbone, lightly loss, batch and views on an
   in-memory uint8 tensor. Goal ≥ 0.95×.
3. loader: images/s of shards → ShardDataset → DataLoader vs the same images from an
   in-memory tensor through a DataLoader with the same batch size and workers. Goal ≥ 0.9×.
4. quality: SimCLR for a wall-clock budget on Fashion-MNIST train, then weighted kNN
   (k=20, T=0.07, cosine) on the test split, against raw pixels with the same kNN.

Usage: ``.venv/bin/python benchmarks/bench_pretrain.py [--small] [--only augment,step,loader,quality]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from lightly.utils.benchmarking import knn_predict
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from sslflow.data import Manifest, ShardDataset, write_shards
from sslflow.data.sources import ArraySource, fashion_mnist
from sslflow.ssl.augment import ViewAugment
from sslflow.ssl.backbones import create_backbone
from sslflow.ssl.config import PretrainConfig
from sslflow.ssl.export import load_backbone
from sslflow.ssl.loader import collate_images
from sslflow.ssl.methods import ViewSpec
from sslflow.ssl.train import pretrain

MEAN, STD = (0.286,), (0.353,)


def _subset(source: ArraySource, count: int) -> ArraySource:
    return dataclasses.replace(source, images=source.images[:count], labels=source.labels[:count])


def bench_augment(batch: int, rounds: int) -> None:
    """Best of ``rounds`` interleaved timings each (the machine is shared: the minimum is the cost)."""
    images = torch.from_numpy(fashion_mnist(split="train").images[:batch]).unsqueeze(1)
    augment = ViewAugment(ViewSpec(), 28, 1, MEAN, STD)
    generator = torch.Generator().manual_seed(0)
    pils = [Image.fromarray(img[0].numpy(), "L") for img in images]
    transform = SimCLRTransform(
        input_size=28, min_scale=0.2, cj_prob=0.8, cj_strength=0.5, cj_bright=0.8, cj_contrast=0.8, cj_sat=0.0,
        cj_hue=0.0, random_gray_scale=0.0, gaussian_blur=0.0, normalize={"mean": list(MEAN), "std": list(STD)},
    )  # fmt: skip
    augment(images, generator)
    batched, per_sample = float("inf"), float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        augment(images, generator)
        batched = min(batched, time.perf_counter() - started)
        started = time.perf_counter()
        views = [transform(p) for p in pils]
        torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
        per_sample = min(per_sample, time.perf_counter() - started)
    print(f"augment  2 views of {batch} 28px images (best of {rounds}): batched tensor {batched * 1e3:.1f} ms, "
          f"lightly PIL per sample {per_sample * 1e3:.1f} ms → batched is {per_sample / batched:.1f}× faster")  # fmt: skip


class _StepTimer(pl.Callback):
    """Wall time of each optimiser step after the first ``skip`` (batch end to batch end)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        ends = self.ends[self.skip - 1 :]
        return [b - a for a, b in zip(ends, ends[1:])]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _plain_loop(images: torch.Tensor, config: PretrainConfig, steps: int, skip: int) -> list[float]:
    """Step times of a hand-written SimCLR loop (same backbone, head, loss, views, optimiser)."""
    torch.manual_seed(config.seed)
    backbone, dim = create_backbone(config.backbone, 1, config.image_size, config.small_stem)
    head = SimCLRProjectionHead(dim, 512, 128)
    criterion = NTXentLoss(temperature=0.2)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    augment = ViewAugment(ViewSpec(), config.image_size, 1, MEAN, STD)
    batch = config.batch_size
    times = []
    for step in range(steps + skip):
        started = time.perf_counter()
        start = (step * batch) % (len(images) - batch)
        views = augment(images[start : start + batch], torch.Generator().manual_seed(step))
        z = head(backbone(torch.cat(views)))
        loss = criterion(*z.chunk(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times[skip:]


def bench_step(manifest: Manifest, images: torch.Tensor, steps: int, backbone: str, small_stem: bool) -> None:
    """Median step time of each (robust to bursts of load from other jobs), two alternating rounds."""
    skip = 3
    config = PretrainConfig(
        backbone=backbone, small_stem=small_stem, batch_size=128, max_steps=steps + skip, epochs=1,
        samples_per_epoch=128 * (steps + skip + 2), num_workers=2, warmup_epochs=0.0, progress_bar=False,
        checkpoint_every_n_steps=10_000, mean=MEAN, std=STD,
    )  # fmt: skip
    sslflow_times: list[float] = []
    plain_times: list[float] = []
    for _ in range(2):
        timer = _StepTimer(skip)
        with tempfile.TemporaryDirectory() as folder:
            pretrain(config, manifest, folder, callbacks=[timer])
        sslflow_times += timer.step_seconds()
        plain_times += _plain_loop(images, config, steps, skip)
    sslflow_rate = config.batch_size / _median(sslflow_times)
    plain_rate = config.batch_size / _median(plain_times)
    print(f"step     {backbone}{' small-stem' if small_stem else ''} batch 128, 2 × {steps} timed steps, median: "
          f"sslflow {sslflow_rate:.1f} img/s, plain loop {plain_rate:.1f} img/s → {sslflow_rate / plain_rate:.2f}×")  # fmt: skip


def _drain(loader: DataLoader, batches: int) -> float:
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(iterator))
    return seen / (time.perf_counter() - started)


def bench_loader(manifest: Manifest, images: torch.Tensor, batches: int) -> None:
    dataset = ShardDataset(manifest, mode="resampled", samples_per_epoch=256 * (batches + 8), decode="tensor")
    shards = _drain(DataLoader(dataset, batch_size=256, num_workers=2, collate_fn=collate_images), batches)
    memory = TensorDataset(images)
    in_memory = _drain(
        DataLoader(memory, batch_size=256, num_workers=2, shuffle=True, collate_fn=lambda s: torch.stack([x[0] for x in s])),
        batches,
    )
    print(f"loader   batch 256, 2 workers: shards {shards:.0f} img/s, in-memory tensor {in_memory:.0f} img/s "
          f"→ {shards / in_memory:.2f}×")  # fmt: skip


def _features(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 1000):
            x = (images[start : start + 1000].float() / 255 - MEAN[0]) / STD[0]
            out.append(F.normalize(module(x), dim=1))
    return torch.cat(out)


def _knn(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor) -> float:
    predicted = []
    for start in range(0, len(query), 1000):
        predicted.append(knn_predict(query[start : start + 1000], bank.T, bank_y, 10, knn_k=20, knn_t=0.07)[:, 0])
    return float((torch.cat(predicted) == query_y).float().mean())


def bench_quality(train: Manifest, minutes: float, backbone: str, small_stem: bool, bank_size: int) -> None:
    train_src, test_src = fashion_mnist(split="train"), fashion_mnist(split="test")
    bank_x = torch.from_numpy(train_src.images[:bank_size]).unsqueeze(1)
    bank_y = torch.from_numpy(train_src.labels[:bank_size]).long()
    test_x = torch.from_numpy(test_src.images).unsqueeze(1)
    test_y = torch.from_numpy(test_src.labels).long()
    raw = _knn(F.normalize(bank_x.flatten(1).float(), dim=1), bank_y, F.normalize(test_x.flatten(1).float(), dim=1), test_y)
    print(f"quality  raw pixels, bank {bank_size} train images, 10k test: kNN top-1 {raw:.4f}")
    timeline = []
    with tempfile.TemporaryDirectory() as folder:
        config = PretrainConfig(
            backbone=backbone, small_stem=small_stem, batch_size=256, epochs=100, samples_per_epoch=60_000,
            num_workers=2, lr=0.3, warmup_epochs=0.1, checkpoint_every_n_steps=50, progress_bar=False,
            mean=MEAN, std=STD,
        )  # fmt: skip
        deadline = time.perf_counter() + minutes * 60

        class Budget(pl.Callback):
            def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
                if time.perf_counter() > deadline:
                    trainer.should_stop = True

        started = time.perf_counter()
        result = pretrain(config, train, folder, callbacks=[Budget()])
        trained = time.perf_counter() - started
        module = load_backbone(result.backbone_path).module
        accuracy = _knn(_features(module, bank_x), bank_y, _features(module, test_x), test_y)
        timeline.append((trained, result.steps, accuracy))
    for seconds, steps, accuracy in timeline:
        print(f"quality  SimCLR {backbone}{' small-stem' if small_stem else ''}: {steps} steps × 256 in {seconds:.0f} s "
              f"→ kNN top-1 {accuracy:.4f} (raw pixels {raw:.4f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer steps and a 1-minute quality run")
    parser.add_argument("--only", default="augment,step,loader,quality", help="comma-separated benchmarks")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--small-stem", action="store_true")
    parser.add_argument("--minutes", type=float, default=5.0, help="quality run wall-clock budget")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        source = fashion_mnist(split="train")
        count = 8000 if args.small else 60_000
        manifest = write_shards(_subset(source, count), Path(folder) / "train", shard_size=2000, progress=False)
        images = torch.from_numpy(source.images[:count]).unsqueeze(1)
        if "augment" in chosen:
            bench_augment(256, 10 if args.small else 30)
        if "step" in chosen:
            bench_step(manifest, images, 10 if args.small else 30, args.backbone, args.small_stem)
        if "loader" in chosen:
            bench_loader(manifest, images, 20 if args.small else 100)
        if "quality" in chosen:
            bench_quality(manifest, 1.0 if args.small else args.minutes, args.backbone, args.small_stem,
                          2000 if args.small else 10_000)  # fmt: skip


if __name__ == "__main__":
    main()
