"""Samples/s decoding Fashion-MNIST to tensors: WebDataset shards against a folder of PNG files.

Both baselines are measured in the same run on the same images:
- ``folder (same decoder)``: one PNG file per image, read and decoded with the decoder the shard
  reader uses, so the ratio isolates the container (one open per file vs one per shard);
- ``folder (ImageFolder)``: torchvision's ImageFolder with PIL and PILToTensor, what a user
  would write without sslflow.

    .venv/bin/python benchmarks/bench_shards.py            # 60,000 images
    .venv/bin/python benchmarks/bench_shards.py --samples 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import PILToTensor
from tqdm import tqdm

from sslflow.data import ShardDataset, write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist
from sslflow.data.decoding import decode_tensor


class PngFolder(Dataset):
    """One PNG per image, decoded with the same decoder as the shard reader."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        return decode_tensor(path.read_bytes()), int(path.parent.name)


def rows(batch: dict[str, torch.Tensor] | list[torch.Tensor]) -> int:
    """Images in a collated batch: shard batches are dicts, folder batches (image, label) lists."""
    return len(batch["image"] if isinstance(batch, dict) else batch[0])


def rate(samples: Iterable[object], expected: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in samples)
    elapsed = time.perf_counter() - started
    assert count == expected, f"read {count} samples, expected {expected}"
    return count / elapsed


def write_folder(source: ArraySource, root: Path) -> list[Path]:
    files = []
    for item in tqdm(source.iter_items(), total=len(source), desc="PNG folder"):
        path = root / str(item.label) / f"{item.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        item.image.save(path, format="PNG", compress_level=1)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--shard-size", type=int, default=5_000)
    parser.add_argument(
        "--batch-size", type=int, default=256, help="DataLoader batch (collated in the workers)"
    )
    args = parser.parse_args()

    full = fashion_mnist(split="train")
    n = min(args.samples, len(full))
    source = ArraySource(
        full.name,
        full.images[:n],
        full.labels[:n],
        full.key_prefix,
        {**full.origin, "head": n},
        full.classes,
    )
    with tempfile.TemporaryDirectory() as tmp:
        # PNG members, as the folder holds: the container alone (blocks: the loader benchmark)
        manifest = write_shards(
            source, Path(tmp) / "shards", shard_size=args.shard_size, layout="samples"
        )
        files = write_folder(source, Path(tmp) / "folder")
        image_folder = ImageFolder(str(Path(tmp) / "folder"), transform=PILToTensor())
        results: dict[str, dict[int, float]] = {}
        for workers in (0, 2):

            def loader(dataset: Dataset, workers: int = workers) -> Iterable[object]:
                batches = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)
                return (row for batch in batches for row in range(rows(batch)))

            results.setdefault("shards finite", {})[workers] = rate(
                loader(ShardDataset(manifest)), n
            )
            resampled = ShardDataset(manifest, mode="resampled", samples_per_epoch=n)
            results.setdefault("shards resampled", {})[workers] = rate(loader(resampled), n)
            results.setdefault("folder (same decoder)", {})[workers] = rate(
                loader(PngFolder(files)), n
            )
            results.setdefault("folder (ImageFolder)", {})[workers] = rate(loader(image_folder), n)

    print(
        f"\nFashion-MNIST train, {n} images, {len(manifest.shards)} shards, batch "
        f"{args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'reader':<24}{'0 workers':>14}{'2 workers':>14}")
    for name, by_workers in results.items():
        print(f"{name:<24}{by_workers[0]:>11.0f}/s {by_workers[2]:>11.0f}/s")
    for baseline in ("folder (same decoder)", "folder (ImageFolder)"):
        for mode in ("shards finite", "shards resampled"):
            ratios = [results[mode][w] / results[baseline][w] for w in (0, 2)]
            print(
                f"ratio {mode} / {baseline}: {ratios[0]:.2f}x (0 workers), {ratios[1]:.2f}x (2 "
                "workers)"
            )


if __name__ == "__main__":
    main()
