"""Pretraining quality and throughput on a GPU: every method, ResNet-18 small-stem, Fashion-MNIST.

For each method: train with sslflow's Lightning loop on shards for a fixed wall-clock budget,
then weighted kNN (k=20, T=0.07, cosine on L2-normalised backbone features; bank = the 60k
train images, queries = the 10k test images) against raw pixels through the same kNN, in the
same run. Prints images/s and accuracy per method.

    python benchmarks/bench_pretrain_gpu.py --data /path/to/fashion-mnist --seconds 90
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from sslflow.data import write_shards
from sslflow.data.sources import fashion_mnist
from sslflow.evaluation.knn import weighted_knn
from sslflow.ssl.config import PretrainConfig
from sslflow.ssl.export import load_backbone
from sslflow.ssl.train import pretrain

MEAN, STD = (0.286,), (0.353,)
# Per-method settings for batch 512 on one GPU (lr scaled linearly from the methods' papers).
METHODS: dict[str, dict[str, object]] = {
    "simclr": {"lr": 0.6, "optimizer": "sgd"},
    "moco": {"lr": 0.6, "optimizer": "sgd", "method_options": {"queue_size": 8192}},
    "swav": {"lr": 0.6, "optimizer": "sgd", "method_options": {"n_local": 4, "n_prototypes": [300]}},
    "amcl": {"lr": 0.6, "optimizer": "sgd"},
}


class Budget(pl.Callback):
    """Stop training after ``seconds`` of wall-clock time."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if time.perf_counter() > self.deadline:
            trainer.should_stop = True


def features(backbone: object, images: torch.Tensor) -> torch.Tensor:
    out = [backbone.embed(images[s : s + 2048]) for s in range(0, len(images), 2048)]  # type: ignore[attr-defined]
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--seconds", type=float, default=90.0, help="training budget per method")
    parser.add_argument("--methods", default="simclr,moco,swav,amcl")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train and test images (smoke runs)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_src, test_src = fashion_mnist(args.data, "train"), fashion_mnist(args.data, "test")
    if args.limit:
        for source in (train_src, test_src):
            source.images, source.labels = source.images[: args.limit], source.labels[: args.limit]
    bank_x = torch.from_numpy(train_src.images).unsqueeze(1)
    bank_y = torch.from_numpy(train_src.labels).long()
    test_x = torch.from_numpy(test_src.images).unsqueeze(1)
    test_y = torch.from_numpy(test_src.labels).long()
    raw = weighted_knn(bank_x.flatten(1).float().to(device), bank_y.to(device),
                       test_x.flatten(1).float().to(device), test_y.to(device), settings=[(20, 0.07)])[0]  # fmt: skip
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; raw pixels kNN top-1 {raw.top1:.4f}")

    with tempfile.TemporaryDirectory() as folder:
        shards = write_shards(train_src, Path(folder) / "shards", shard_size=2500, progress=False)
        for method in args.methods.split(","):
            config = PretrainConfig(
                method=method, backbone="resnet18", small_stem=True, batch_size=args.batch_size,
                epochs=1000, samples_per_epoch=60_000, num_workers=args.workers, warmup_epochs=1.0,
                precision="bf16-mixed" if device == "cuda" else "32-true", accelerator="gpu" if device == "cuda" else "cpu",
                checkpoint_every_n_steps=10_000, progress_bar=False, mean=MEAN, std=STD, **METHODS[method],  # type: ignore[arg-type]
            )  # fmt: skip
            started = time.perf_counter()
            result = pretrain(config, shards, Path(folder) / method, callbacks=[Budget(args.seconds)])
            seconds = time.perf_counter() - started
            backbone = load_backbone(result.backbone_path).to(device)
            top1 = weighted_knn(features(backbone, bank_x), bank_y.to(device), features(backbone, test_x),
                                test_y.to(device), settings=[(20, 0.07)])[0].top1  # fmt: skip
            images = result.steps * args.batch_size
            print(f"{method:<7} {result.steps:>5} steps × {args.batch_size} in {seconds:5.0f} s "
                  f"({images / seconds:7.0f} img/s, {images / 60_000:5.1f} epochs) → kNN top-1 {top1:.4f} "
                  f"(raw pixels {raw.top1:.4f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
