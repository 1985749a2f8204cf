"""JPEG decode + crop + flip at 224 px, images per second on one core, per decoder.

The photos are what ``sslflow ingest --max-side 512`` stores: crops of the real photos shipped
with scikit-learn (and scikit-image where installed), longer side 512, JPEG quality 90. Every
contender turns the same bytes into a uint8 (3, 224, 224) tensor, one image at a time, with
torch limited to one thread (a DataLoader worker's share of a core):

- ``sslflow``: the training worker's path: ``decode_tensor`` (torchvision's libjpeg-turbo
  decoder, EXIF applied) → ``CenterCropResize(224)`` (antialiased) → horizontal flip;
- ``torchvision``: ``decode_jpeg`` → a random-resized crop (scale 0.35–1) resized to 224
  (antialiased) → flip;
- ``pil`` / ``pil+draft``: Pillow decode (with ``draft``: libjpeg's DCT scaling to the
  smallest size still covering 224 px) → the same crop → resize → flip → tensor.

Rounds alternate the contenders; the median of 5 rounds is printed, and the ratio to the
fastest. Goal (issue 15): ≥ 300 img/s per core.

    .venv/bin/python benchmarks/bench_decode.py [--files 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from photo_folder import _random_crop, _regions, sample_photos

SIDE = 224


def photo_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` photo crops, longer side 512, as JPEG quality 90 bytes."""
    rng = np.random.default_rng(seed)
    regions = list(_regions(sample_photos()).values())
    out = []
    for number in range(count):
        crop = _random_crop(regions[number % len(regions)], rng, 256, 640)
        scale = 512 / max(crop.size)
        image = crop.resize((round(crop.width * scale), round(crop.height * scale)))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random square-ish crop of 35–100 % of the area (left, top, width, height)."""
    area = width * height * rng.uniform(0.35, 1.0)
    side = min(int(area**0.5), width, height)
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    return left, top, side, side


def sslflow_path(data: bytes, rng: np.random.Generator) -> torch.Tensor:
    from sslflow.data import decode_tensor
    from sslflow.models import CenterCropResize

    return torch.flip(CenterCropResize(SIDE)(decode_tensor(data, "RGB")), dims=[-1])


def torchvision_path(data: bytes, rng: np.random.Generator) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF
    from torchvision.io import ImageReadMode, decode_jpeg

    image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    left, top, width, height = crop_box(image.shape[2], image.shape[1], rng)
    cropped = TF.resized_crop(image, top, left, height, width, [SIDE, SIDE], antialias=True)
    return torch.flip(cropped, dims=[-1])


def pil_path(data: bytes, rng: np.random.Generator, draft: bool) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        if draft:
            image.draft("RGB", (SIDE, SIDE))
        image = image.convert("RGB")
        left, top, width, height = crop_box(image.width, image.height, rng)
        resized = image.resize(
            (SIDE, SIDE), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height)
        )
    flipped = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.array(flipped)).permute(2, 0, 1)


def rate(path: Callable[[bytes, np.random.Generator], torch.Tensor], jpegs: list[bytes]) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for data in jpegs:
        out = path(data, rng)
        assert out.shape == (3, SIDE, SIDE) and out.dtype == torch.uint8
    return len(jpegs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    jpegs = photo_jpegs(args.files)
    contenders = {
        "sslflow": sslflow_path,
        "torchvision": torchvision_path,
        "pil": lambda d, r: pil_path(d, r, draft=False),
        "pil+draft": lambda d, r: pil_path(d, r, draft=True),
    }
    for path in contenders.values():  # warm-up: imports, first-call costs
        rate(path, jpegs[:10])
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(args.rounds):
        order = list(contenders)
        if round_number % 2:
            order.reverse()
        for name in order:
            rates[name].append(rate(contenders[name], jpegs))
    median = {name: statistics.median(values) for name, values in rates.items()}
    best = max(median.values())
    mean_kb = sum(map(len, jpegs)) / len(jpegs) / 1024
    print(f"decode+crop+flip to {SIDE} px, {len(jpegs)} JPEGs (longer side 512, {mean_kb:.0f} KB)")
    print("| decoder | img/s per core (median of rounds) | vs fastest |\n|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.0f} | {value / best:.2f} |")


if __name__ == "__main__":
    main()
