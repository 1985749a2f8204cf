"""The GPU benchmark: one run (under 10 minutes on one H200) that prints every GPU number.

1. loader: img/s of shards against an in-memory uint8 tensor, every batch ending on the GPU:
   (a) 28 px Fashion-MNIST (scikit-learn's digits offline) in block shards, the training path;
   (b) photo crops stored as JPEG/PNG, cut to 224 px: decoded by the workers, or by nvJPEG on
   the GPU (``decode: device``).
2. training: img/s of sslflow's pretraining per method, ResNet-18 small stem, 28 px, batch 256,
   bf16, with the GPU's mean utilisation over the timed steps (``nvidia-smi``).
3. k-means: GFLOP/s of ``sslflow.curation.kmeans`` on the GPU (2·N·K·D per pass) against a
   torch matmul of the same shapes on the GPU (and faiss-gpu's Kmeans when installed).
4. kNN: ``weighted_knn`` with the bank on the GPU against a bare matmul + top-k of the same
   shapes.

Never run in CI. On a GPU machine: ``.venv/bin/python benchmarks/bench_gpu.py`` (``--json
results.json`` keeps the numbers). ``--device cpu --small`` runs every section on tiny shapes
on the CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import faiss
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_pretrain import _median, _StepTimer

from conftest import head
from photo_folder import build_photo_folder
from sslflow.curation.kmeans import KMeansConfig, kmeans
from sslflow.data import Manifest, open_source, write_shards
from sslflow.data.datasets import ArraySource, digits, fashion_mnist, fashion_mnist_dir
from sslflow.evaluation.knn import weighted_knn
from sslflow.ssl.config import PretrainConfig
from sslflow.ssl.loader import DeviceDecode, ShardBatches, training_dataset
from sslflow.ssl.methods import METHODS
from sslflow.ssl.train import pretrain


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(batches: Iterator[torch.Tensor], count: int, device: torch.device) -> float:
    """img/s of ``count`` batches moved to ``device`` (after one warm-up batch)."""
    next(batches)
    _synchronise(device)
    started, seen = time.perf_counter(), 0
    for _ in range(count):
        batch = next(batches).to(device, non_blocking=True)
        seen += len(batch)
    _synchronise(device)
    return seen / (time.perf_counter() - started)


def _memory_batches(images: torch.Tensor, batch: int, workers: int) -> Iterator[torch.Tensor]:
    loader = DataLoader(
        TensorDataset(images),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        collate_fn=lambda samples: torch.stack([s[0] for s in samples]),
    )
    while True:
        yield from loader


def _shard_batches(
    manifest: Manifest, size: int, batch: int, workers: int, decode: DeviceDecode | None, n: int
) -> Iterator[torch.Tensor]:
    samples = batch * max(1, workers) * (n + 4)
    dataset = training_dataset(
        manifest, samples, size, seed=0, batch_size=batch, encoded=bool(decode)
    )
    return iter(ShardBatches(dataset, batch, workers, n + 2, decode))


def small_images(small: bool) -> ArraySource:
    """Fashion-MNIST train (60k, 28 px), or scikit-learn's digits where it is not installed."""
    source = fashion_mnist(split="train") if fashion_mnist_dir() is not None else digits()
    return head(source, 8192) if small else source


def bench_loader(args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    source = small_images(args.small)
    blocks = write_shards(source, work / "blocks", shard_size=4096, progress=False, layout="blocks")
    images = torch.from_numpy(source.images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    batches, batch, workers = (20, 256, 2) if args.small else (300, 256, args.workers)
    small = {
        "block shards": _rate(
            _shard_batches(blocks, 28, batch, workers, None, batches), batches, device
        ),
        "in-memory": _rate(_memory_batches(images, batch, workers), batches, device),
    }
    folder = build_photo_folder(
        work / "photos", per_class=20 if args.small else 300, min_side=256, max_side=320, seed=1
    )
    photos = write_shards(
        open_source("image-folder", path=str(folder.root)), work / "jpeg", progress=False
    )
    # the baseline: 512 crops already decoded and cut to 224 px, in memory
    decoded = torch.stack([s["image"] for s in training_dataset(photos, 512, 224, seed=0)])
    jpeg_batches = 8 if args.small else 60
    photo_batch = 64 if args.small else 256
    jpeg = {
        "workers decode": _rate(
            _shard_batches(photos, 224, photo_batch, workers, None, jpeg_batches),
            jpeg_batches,
            device,
        ),
        "device decode": _rate(
            _shard_batches(
                photos,
                224,
                photo_batch,
                workers,
                DeviceDecode(224, "RGB", str(device)),
                jpeg_batches,
            ),
            jpeg_batches,
            device,
        ),
        "in-memory": _rate(_memory_batches(decoded, photo_batch, workers), jpeg_batches, device),
    }
    for name, rates in (("28 px", small), ("224 px JPEG", jpeg)):
        base = rates["in-memory"]
        line = ", ".join(f"{k} {v:,.0f} img/s ({v / base:.2f}×)" for k, v in rates.items())
        print(f"loader {name}, {workers} workers: {line}", flush=True)
    return {"28px": small, "224px_jpeg": jpeg, "workers": workers}


class GpuUtilisation:
    """Mean GPU utilisation (%) from ``nvidia-smi`` sampled every 0.2 s while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ]
        while not self._stop.wait(0.2):
            try:
                self.samples.append(float(subprocess.check_output(query, text=True).split()[0]))
            except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def bench_training(args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    manifest = write_shards(
        small_images(args.small), work / "train", progress=False, layout="blocks"
    )
    steps, skip = (4, 2) if args.small else (60, 10)
    batch = 32 if args.small else 256
    results: dict[str, Any] = {}
    for method in METHODS:
        config = PretrainConfig(
            method=method,
            backbone="resnet18",
            small_stem=True,
            image_size=28,
            batch_size=batch,
            max_steps=steps + skip,
            samples_per_epoch=batch * (steps + skip + 2) * max(1, args.workers),
            num_workers=2 if args.small else args.workers,
            precision="bf16-mixed" if device.type == "cuda" else "32-true",
            accelerator="gpu" if device.type == "cuda" else "cpu",
            progress_bar=False,
            checkpoint_every_n_steps=100_000,
        )
        timer = _StepTimer(skip)
        with GpuUtilisation() as gpu, tempfile.TemporaryDirectory(dir=work) as run:
            pretrain(config, manifest, run, callbacks=[timer])
        rate = batch / _median(timer.step_seconds())
        results[method] = {"img_per_s": round(rate, 1), "gpu_utilisation": gpu.mean}
        utilisation = "n/a" if gpu.mean is None else f"{gpu.mean:.0f} %"
        print(
            f"train  {method:<6} resnet18 small stem, batch {batch}: {rate:,.0f} img/s, "
            f"GPU {utilisation}",
            flush=True,
        )
    return results


def _timed(run: Callable[[], object], device: torch.device) -> float:
    _synchronise(device)
    started = time.perf_counter()
    run()
    _synchronise(device)
    return time.perf_counter() - started


def bench_kmeans(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n, d, k, iterations = (20_000, 64, 100, 5) if args.small else (1_000_000, 128, 10_000, 10)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    init = x[rng.choice(n, k, replace=False)].copy()
    chunk = 65_536
    xt = torch.from_numpy(x).to(device)
    ct = torch.from_numpy(init).to(device)
    out = torch.empty(chunk, k, device=device)

    def matmul() -> None:
        for _ in range(iterations):
            for start in range(0, n, chunk):
                rows = xt[start : start + chunk]
                torch.mm(rows, ct.T, out=out[: len(rows)])

    flop = 2.0 * n * k * d * iterations
    config = KMeansConfig(n_clusters=k, max_iter=iterations, chunk_size=chunk, device=str(device))
    matmul()  # warm-up (cuBLAS handles, clocks)
    roofline = flop / _timed(matmul, device) / 1e9
    results: dict[str, Any] = {"shape": {"N": n, "D": d, "K": k, "iterations": iterations}}
    seconds = _timed(lambda: kmeans(x, config, init=init), device)
    ours = 2.0 * n * k * d * (iterations + 1) / seconds / 1e9  # the final pass counts too
    results.update(ours_gflops=round(ours, 1), matmul_gflops=round(roofline, 1))
    line = (
        f"kmeans N={n:,} D={d} K={k:,}: sslflow {ours:,.0f} GFLOP/s, torch matmul "
        f"{roofline:,.0f} ({ours / roofline:.2f}×)"
    )

    if device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
        trainer = faiss.Kmeans(d, k, niter=iterations, gpu=True, max_points_per_centroid=n)
        reference = flop / _timed(lambda: trainer.train(x, init_centroids=init), device) / 1e9
        results["faiss_gpu_gflops"] = round(reference, 1)
        line += f", faiss-gpu Kmeans {reference:,.0f} ({ours / reference:.2f}×)"
    print(line, flush=True)
    return results


def bench_knn(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    bank, queries, d, classes = (
        (5_000, 500, 64, 10) if args.small else (1_000_000, 10_000, 512, 1000)
    )
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(bank, d, generator=generator).to(device)
    labels = torch.randint(0, classes, (bank,), generator=generator).to(device)
    test = torch.randn(queries, d, generator=generator).to(device)
    test_labels = torch.randint(0, classes, (queries,), generator=generator).to(device)
    chunk = 1024 if device.type == "cuda" else 256

    def ours() -> None:
        weighted_knn(train, labels, test, test_labels, [(20, 0.07), (200, 0.07)], chunk_size=chunk)

    def bare() -> None:
        normalised = torch.nn.functional.normalize(train, dim=1)
        for start in range(0, queries, chunk):
            block = torch.nn.functional.normalize(test[start : start + chunk], dim=1)
            torch.topk(block @ normalised.T, 200, dim=1)

    ours()  # warm-up
    bare()
    ours_s, bare_s = _timed(ours, device), _timed(bare, device)
    print(
        f"knn    bank {bank:,} × {d}, {queries:,} queries, k ≤ 200: weighted_knn {ours_s:.2f} s, "
        f"matmul + top-k {bare_s:.2f} s ({bare_s / ours_s:.2f}×)",
        flush=True,
    )
    return {"weighted_knn_s": round(ours_s, 3), "matmul_topk_s": round(bare_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda", help="cuda (default) or cpu (a check of the script)"
    )
    parser.add_argument(
        "--small", action="store_true", help="tiny shapes (seconds; for --device cpu)"
    )
    parser.add_argument("--workers", type=int, default=max(2, min(14, (os.cpu_count() or 4) - 2)))
    parser.add_argument("--only", default="loader,training,kmeans,knn")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; --device cpu --small checks the script on the CPU")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        sections: dict[str, Callable[[], dict[str, Any]]] = {
            "loader": lambda: bench_loader(args, work, device),
            "training": lambda: bench_training(args, work, device),
            "kmeans": lambda: bench_kmeans(args, device),
            "knn": lambda: bench_knn(args, device),
        }
        for name in args.only.split(","):
            results[name] = sections[name]()
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(f"done in {results['seconds']:.0f} s on {results['device']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
