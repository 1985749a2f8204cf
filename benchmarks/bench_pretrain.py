"""Pretraining benchmarks, each against a baseline measured in the same process.

1. augment: batched tensor views (``ViewAugment``) vs lightly's per-sample PIL ``SimCLRTransform``.
2. step: images/s of sslflow's Lightning training (shards → DataLoader → views → SimCLR step)
   vs a plain PyTorch loop with the same timm backbone, lightly loss, batch and views on an
   in-memory uint8 tensor. Goal ≥ 0.95×.
3. loader: images/s of shards → ShardDataset → DataLoader vs the same images from an
   in-memory tensor through a DataLoader with the same batch size and workers. Goal ≥ 0.9×.
4. quality: every method on Fashion-MNIST train (60k, from shards) within a wall-clock budget
   per method (30 minutes by default), then weighted kNN (k=20, T=0.07, cosine on
   L2-normalised backbone features; 60k train bank, 10k test queries), against raw pixels
   through the same kNN. Accuracy is also measured at marks on the way (accuracy vs wall time).
   On a GPU machine the same benchmark runs with bf16 and the GPU (see docs/benchmarks/pretrain.md).

Usage: ``.venv/bin/python benchmarks/bench_pretrain.py [--small] [--only
augment,step,loader,quality]``
(``--help`` lists the quality run's options).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from sslflow.data import Manifest, ShardDataset, write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist
from sslflow.evaluation.knn import weighted_knn
from sslflow.models import FrozenBackbone, create_backbone, load_backbone
from sslflow.ssl.augment import ViewAugment
from sslflow.ssl.config import PretrainConfig
from sslflow.ssl.methods import ViewSpec
from sslflow.ssl.train import frozen_copy, pretrain

MEAN, STD = (0.286,), (0.353,)


def _subset(source: ArraySource, count: int) -> ArraySource:
    return dataclasses.replace(source, images=source.images[:count], labels=source.labels[:count])


def bench_augment(batch: int, rounds: int) -> None:
    """Best of ``rounds`` interleaved timings each (the machine is shared: the minimum is the
    cost)."""
    images = torch.from_numpy(fashion_mnist(split="train").images[:batch]).unsqueeze(1)
    augment = ViewAugment(ViewSpec(), 28, 1, MEAN, STD)
    generator = torch.Generator().manual_seed(0)
    pils = [Image.fromarray(img[0].numpy(), "L") for img in images]
    transform = SimCLRTransform(
        input_size=28,
        min_scale=0.2,
        cj_prob=0.8,
        cj_strength=0.5,
        cj_bright=0.8,
        cj_contrast=0.8,
        cj_sat=0.0,
        cj_hue=0.0,
        random_gray_scale=0.0,
        gaussian_blur=0.0,
        normalize={"mean": list(MEAN), "std": list(STD)},
    )
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
    print(
        f"augment  2 views of {batch} 28px images (best of {rounds}): batched tensor "
        f"{batched * 1e3:.1f} ms, "
        f"lightly PIL per sample {per_sample * 1e3:.1f} ms → batched is "
        f"{per_sample / batched:.1f}× faster"
    )


class _StepTimer(pl.Callback):
    """Wall time of each optimiser step after the first ``skip`` (batch end to batch end)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        ends = self.ends[self.skip - 1 :]
        return [b - a for a, b in itertools.pairwise(ends)]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _plain_loop(images: torch.Tensor, config: PretrainConfig, steps: int, skip: int) -> list[float]:
    """Step times of a hand-written SimCLR loop (same backbone, head, loss, views, optimiser)."""
    torch.manual_seed(config.seed)
    backbone, dim = create_backbone(config.backbone, 1, config.image_size, config.small_stem)
    head = SimCLRProjectionHead(dim, 512, 128)
    criterion = NTXentLoss(temperature=0.2)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
    )
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


def bench_step(
    manifest: Manifest, images: torch.Tensor, steps: int, backbone: str, small_stem: bool
) -> None:
    """Median step time of each (robust to bursts of load from other jobs), two alternating
    rounds."""
    skip = 3
    config = PretrainConfig(
        backbone=backbone,
        small_stem=small_stem,
        image_size=28,  # Fashion-MNIST as it is (auto would measure the same from the manifest)
        in_chans=1,
        batch_size=128,
        max_steps=steps + skip,
        epochs=1,
        samples_per_epoch=128 * (steps + skip + 2),
        num_workers=2,
        warmup_epochs=0.0,
        progress_bar=False,
        checkpoint_every_n_steps=10_000,
        mean=MEAN,
        std=STD,
    )
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
    print(
        f"step     {backbone}{' small-stem' if small_stem else ''} batch 128, 2 × {steps} timed "
        "steps, median: "
        f"sslflow {sslflow_rate:.1f} img/s, plain loop {plain_rate:.1f} img/s → "
        f"{sslflow_rate / plain_rate:.2f}×"
    )


def _drain(loader: DataLoader, batches: int) -> float:
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    seen = 0
    for _ in range(batches):
        batch = next(iterator)
        seen += len(batch["image"] if isinstance(batch, dict) else batch)
    return seen / (time.perf_counter() - started)


def bench_loader(
    source: ArraySource, folder: Path, images: torch.Tensor, batches: int, rounds: int = 5
) -> None:
    """Shards in both layouts against an in-memory uint8 tensor, batch 256, 2 workers:
    interleaved rounds, the median of each round's ratio (bursts of other load hit one round,
    not one contender)."""
    manifests = {
        layout: write_shards(
            source, folder / f"loader-{layout}", shard_size=2000, progress=False, layout=layout
        )
        for layout in ("blocks", "samples")
    }

    def shards(manifest: Manifest) -> DataLoader:  # as training reads them (ShardBatches)
        dataset = ShardDataset(
            manifest, mode="resampled", samples_per_epoch=256 * (batches + 8), batch_size=256
        )
        return DataLoader(dataset, batch_size=None, num_workers=2)

    def memory() -> DataLoader:
        return DataLoader(
            TensorDataset(images),
            batch_size=256,
            num_workers=2,
            shuffle=True,
            collate_fn=lambda s: torch.stack([x[0] for x in s]),
        )

    rates: dict[str, list[float]] = {"blocks": [], "samples": [], "in-memory": []}
    for _ in range(rounds):
        for layout, manifest in manifests.items():
            rates[layout].append(_drain(shards(manifest), batches))
        rates["in-memory"].append(_drain(memory(), batches))
    # each round's ratio against the baseline measured beside it, then the median over rounds
    ratio = {
        layout: _median([a / b for a, b in zip(rates[layout], rates["in-memory"], strict=True)])
        for layout in manifests
    }
    median = {name: _median(values) for name, values in rates.items()}
    print(
        f"loader   batch 256, 2 workers, {batches} batches, median of {rounds} rounds: block "
        f"shards {median['blocks']:.0f} img/s (ratio {ratio['blocks']:.2f}×), per-sample "
        f"shards {median['samples']:.0f} img/s ({ratio['samples']:.2f}×), in-memory tensor "
        f"{median['in-memory']:.0f} img/s",
        flush=True,
    )


# Per-recipe settings of the quality runs at batch 256 (SGD lr from solo-learn's CIFAR recipes),
# lr scaled linearly with the batch. A recipe is named after its method unless it sets "method".
QUALITY_METHODS: dict[str, dict[str, object]] = {
    "simclr": {"lr": 0.3},
    "moco-v2": {"method": "moco", "lr": 0.3, "method_options": {"queue_size": 8192}},
    "moco-v3": {"method": "moco", "lr": 0.3, "method_options": {"variant": "v3"}},
    "swav": {
        "lr": 0.3,
        "method_options": {"n_local": 4, "n_prototypes": [300], "freeze_prototypes_steps": 200},
    },
    "amcl": {"lr": 0.3},
}
CALIBRATION_STEPS = 30
SAMPLES_PER_EPOCH = 60_000  # one epoch = the size of Fashion-MNIST train
Evaluate = Callable[[FrozenBackbone], float]


@dataclasses.dataclass(frozen=True)
class QualityPoint:
    """kNN accuracy of one method after ``train_seconds`` of its budget."""

    method: str
    train_seconds: float
    steps: int
    epochs: float
    top1: float


class TimedKnn(pl.Callback):
    """Stops training when the budget is spent and measures kNN at wall-clock marks on the way.

    The clock starts at ``start`` (before calibration: the budget covers everything a method
    does) and pauses while evaluating a copy of the backbone (training state is left untouched).
    """

    def __init__(
        self, method: str, start: float, budget: float, marks: list[float], evaluate: Evaluate
    ) -> None:
        self.method, self.start, self.budget, self.evaluate = method, start, budget, evaluate
        self.marks = sorted(marks)
        self.points: list[QualityPoint] = []
        self._paused = 0.0

    def seconds(self) -> float:
        """Wall-clock seconds since ``start``, evaluation excluded."""
        return time.perf_counter() - self.start - self._paused

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object
    ) -> None:
        elapsed = self.seconds()
        if self.marks and elapsed >= self.marks[0]:
            self.marks.pop(0)
            paused = time.perf_counter()
            config = pl_module.config  # type: ignore[attr-defined]
            frozen = frozen_copy(pl_module.method, config)  # type: ignore[attr-defined]
            step = trainer.global_step
            epochs = step * config.batch_size / config.samples_per_epoch
            self.points.append(
                QualityPoint(self.method, elapsed, step, epochs, self.evaluate(frozen))
            )
            print(
                f"quality  {self.method:<7} {elapsed / 60:5.1f} min {step:>5} steps → kNN top-1 "
                f"{self.points[-1].top1:.4f}",
                flush=True,
            )
            self._paused += time.perf_counter() - paused
        if elapsed >= self.budget:
            trainer.should_stop = True


def knn_evaluator(device: str, data: str | None) -> tuple[Evaluate, float]:
    """Weighted kNN (k=20, T=0.07, cosine) on Fashion-MNIST: 60k train bank, 10k test queries.

    Returns the evaluator of a backbone and the raw-pixel accuracy through the same kNN.
    """
    train, test = fashion_mnist(data, split="train"), fashion_mnist(data, split="test")
    bank_x, test_x = (torch.from_numpy(s.images).unsqueeze(1) for s in (train, test))
    bank_y, test_y = (torch.from_numpy(s.labels).long().to(device) for s in (train, test))

    def top1(bank: torch.Tensor, query: torch.Tensor) -> float:
        return weighted_knn(
            bank.to(device), bank_y, query.to(device), test_y, settings=[(20, 0.07)]
        )[0].top1

    def evaluate(backbone: FrozenBackbone) -> float:
        def embed(images: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [backbone.embed(images[s : s + 2000]) for s in range(0, len(images), 2000)]
            )

        backbone.to(device)
        return top1(embed(bank_x), embed(test_x))

    return evaluate, top1(bank_x.flatten(1).float(), test_x.flatten(1).float())


def quality_config(recipe: str, args: argparse.Namespace, max_steps: int) -> PretrainConfig:
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    settings = dict(QUALITY_METHODS[recipe])
    method = str(settings.pop("method", recipe))
    settings["lr"] = float(settings["lr"]) * args.batch_size / 256  # type: ignore[arg-type]
    warmup = min(
        0.5, 0.05 * max_steps * args.batch_size / SAMPLES_PER_EPOCH
    )  # half an epoch, or 5 % of a short run
    return PretrainConfig(
        method=method,
        backbone=args.backbone,
        small_stem=args.small_stem,
        batch_size=args.batch_size,
        epochs=1000,
        max_steps=max_steps,
        samples_per_epoch=SAMPLES_PER_EPOCH,
        num_workers=args.workers,
        warmup_epochs=warmup,
        checkpoint_every_n_steps=100_000,
        progress_bar=False,
        mean=MEAN,
        std=STD,
        accelerator=accelerator,
        precision="bf16-mixed" if accelerator == "gpu" else "32-true",
        **settings,  # type: ignore[arg-type]
    )


def bench_quality(train: Manifest, args: argparse.Namespace, folder: Path) -> list[QualityPoint]:
    """Each method within ``args.minutes`` of wall clock, calibration included; kNN at marks.

    The cosine schedule must end when the budget does, so a short calibration run measures the
    step time first and the real run gets ``max_steps`` = remaining budget / step time.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    evaluate, raw = knn_evaluator(device, args.data)
    print(f"quality  raw pixels, 60k train bank, 10k test: kNN top-1 {raw:.4f}", flush=True)
    budget = args.minutes * 60
    points: list[QualityPoint] = []
    for recipe in args.methods:
        started = time.perf_counter()
        timer = _StepTimer(skip=5)
        pretrain(
            quality_config(recipe, args, CALIBRATION_STEPS),
            train,
            folder / f"{recipe}-calibration",
            callbacks=[timer],
        )
        step_seconds = _median(timer.step_seconds())
        calibration = time.perf_counter() - started
        clock = TimedKnn(
            recipe,
            started,
            budget,
            [m * 60 for m in args.eval_minutes if m * 60 < budget],
            evaluate,
        )
        max_steps = max(1, int(0.97 * (budget - calibration) / step_seconds))
        result = pretrain(
            quality_config(recipe, args, max_steps), train, folder / recipe, callbacks=[clock]
        )
        seconds = clock.seconds()
        final = evaluate(load_backbone(result.backbone_path))
        points += clock.points
        points.append(
            QualityPoint(
                recipe,
                seconds,
                result.steps,
                result.steps * args.batch_size / SAMPLES_PER_EPOCH,
                final,
            )
        )
        print(
            f"quality  {recipe:<7} {seconds / 60:5.1f} min (calibration {calibration:.0f} s, "
            f"{args.batch_size / step_seconds:.0f} img/s) {result.steps}/{max_steps} steps × "
            f"{args.batch_size} "
            f"= {points[-1].epochs:.1f} epochs → kNN top-1 {final:.4f} (raw pixels {raw:.4f})",
            flush=True,
        )
    print("\n| method | minutes | steps | epochs | kNN top-1 |\n|---|---:|---:|---:|---:|")
    for p in points:
        print(
            f"| {p.method} | {p.train_seconds / 60:.1f} | {p.steps} | {p.epochs:.1f} | "
            f"{p.top1:.4f} |"
        )
    print(f"| raw pixels | — | — | — | {raw:.4f} |")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="8k-image shards, fewer steps, 1-minute quality runs"
    )
    parser.add_argument(
        "--only", default="augment,step,loader,quality", help="comma-separated benchmarks"
    )
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument(
        "--small-stem",
        action="store_true",
        help="3×3 stride-1 ResNet stem (28×28 first feature map)",
    )
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="quality: wall-clock budget per method"
    )
    parser.add_argument(
        "--eval-minutes", default="10,20", help="quality: also measure kNN at these minutes"
    )
    parser.add_argument(
        "--methods",
        default=",".join(QUALITY_METHODS),
        help="quality: recipes to train (QUALITY_METHODS)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="quality: global batch")
    parser.add_argument(
        "--workers", type=int, default=2, help="quality: DataLoader workers decoding shards"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="folder of the Fashion-MNIST idx files (default: found locally)",
    )
    args = parser.parse_args()
    args.eval_minutes = [float(m) for m in args.eval_minutes.split(",") if m]
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(QUALITY_METHODS))
    if unknown:
        parser.error(f"unknown --methods {', '.join(unknown)}; valid: {', '.join(QUALITY_METHODS)}")
    if args.small:
        args.minutes, args.eval_minutes = 1.0, []
    chosen = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as folder:
        source = fashion_mnist(args.data, split="train")
        count = 8000 if args.small else 60_000
        manifest = write_shards(
            _subset(source, count), Path(folder) / "train", shard_size=2000, progress=False
        )
        images = torch.from_numpy(source.images[:count]).unsqueeze(1)
        if "augment" in chosen:
            bench_augment(256, 10 if args.small else 30)
        if "step" in chosen:
            bench_step(manifest, images, 10 if args.small else 30, args.backbone, args.small_stem)
        if "loader" in chosen:
            bench_loader(_subset(source, count), Path(folder), images, 20 if args.small else 200)
        if "quality" in chosen:
            bench_quality(manifest, args, Path(folder))


if __name__ == "__main__":
    main()
