"""Curation benchmarks (issue 3): rings toy, k-means throughput, memory, curation effect.

Run: ``.venv/bin/python benchmarks/bench_curation.py [--small] [--only
rings,kmeans,memory,effect]``.
Every ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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
    """Lloyd GFLOP/s (2·N·K·D·iterations / time) vs a torch matmul roofline and faiss.Kmeans."""
    import faiss
    import torch

    from sslflow.curation.kmeans import KMeansConfig, kmeans

    n, d, k, iterations = (50_000, 128, 256, 20) if args.small else (200_000, 128, 1000, 20)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    init = x[rng.choice(n, k, replace=False)].copy()
    flop = 2.0 * n * k * d * iterations
    chunk = 16384

    xt, ct = torch.from_numpy(x), torch.from_numpy(init)
    buffer = torch.empty(chunk, k)
    started = time.perf_counter()
    for _ in range(iterations):
        for start in range(0, n, chunk):
            rows = xt[start : start + chunk]
            torch.mm(rows, ct.T, out=buffer[: len(rows)])
    roofline = flop / (time.perf_counter() - started) / 1e9

    started = time.perf_counter()
    result = kmeans(x, KMeansConfig(n_clusters=k, max_iter=iterations, chunk_size=chunk), init=init)
    ours_seconds = time.perf_counter() - started
    passes = result.n_iter + (0 if result.converged else 1)  # the final assignment pass counts too
    ours = 2.0 * n * k * d * passes / ours_seconds / 1e9

    trainer = faiss.Kmeans(d, k, niter=iterations, seed=0, max_points_per_centroid=n, verbose=False)
    started = time.perf_counter()
    trainer.train(x, init_centroids=init)
    faiss_gflops = flop / (time.perf_counter() - started) / 1e9
    out = {
        "shape": {"N": n, "D": d, "K": k, "iterations": iterations},
        "ours_gflops": round(ours, 1),
        "ours_passes": passes,
        "roofline_gflops": round(roofline, 1),
        "faiss_gflops": round(faiss_gflops, 1),
        "ours_over_roofline": round(ours / roofline, 3),
        "ours_over_faiss": round(ours / faiss_gflops, 3),
    }
    print(
        f"k-means N={n} D={d} K={k}: ours {ours:.1f} GFLOP/s, torch matmul {roofline:.1f}, "
        f"faiss.Kmeans {faiss_gflops:.1f} → ours/roofline {ours / roofline:.2f}, ours/faiss "
        f"{ours / faiss_gflops:.2f}"
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


def curation_effect(args: argparse.Namespace) -> dict[str, object]:
    """Imbalanced Fashion-MNIST pool + near-duplicates → random vs curated vs oracle 3k subsets."""
    from sslflow.curation.dedup import find_duplicates
    from sslflow.curation.embeddings import EmbedConfig, embed_shards
    from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
    from sslflow.curation.sampling import allocate, sample_hierarchy
    from sslflow.curation.stats import normalised_entropy
    from sslflow.data import write_shards
    from sslflow.data.datasets import ArraySource, fashion_mnist

    source = fashion_mnist(split="train")
    rng = np.random.default_rng(0)
    scale = 0.5 if args.small else 1.0
    per_class = np.round(6000 * scale * 100.0 ** (-np.arange(10) / 9)).astype(int)  # 6000 … 60
    order = rng.permutation(10)  # which class is frequent is arbitrary
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(source.labels == c), per_class[i], replace=False)
            for i, c in enumerate(order)
        ]
    )
    originals = source.images[chosen]
    copies_of = rng.choice(len(chosen), len(chosen) // 10, replace=False)
    noise = rng.integers(-3, 4, size=(len(copies_of), 28, 28))
    copies = np.clip(originals[copies_of].astype(int) + noise, 0, 255).astype(np.uint8)
    images = np.concatenate([originals, copies])
    labels = np.concatenate([source.labels[chosen], source.labels[chosen][copies_of]])
    is_copy = np.r_[np.zeros(len(chosen), bool), np.ones(len(copies_of), bool)]
    target = 1500 if args.small else 3000
    with tempfile.TemporaryDirectory() as folder:
        pool = ArraySource(
            "imbalanced-fmnist", images, labels, "pool", {"bench": "curation"}, source.classes
        )
        manifest = write_shards(pool, Path(folder) / "shards", shard_size=5000, progress=False)
        started = time.perf_counter()
        emb = embed_shards(manifest, Path(folder) / "emb", EmbedConfig(dim=64, progress=False))
        x, keys = emb.array(), emb.keys()
        found = find_duplicates(x, threshold=args.dedup_threshold)
        levels = json.loads(args.levels)
        config = HierarchyConfig(levels=levels, spherical=args.spherical)
        hierarchy = build_hierarchy(x, keys, Path(folder) / "h", config, rows=found.keep)
        curated = sample_hierarchy(hierarchy, keys, target, seed=0).rows
        seconds = time.perf_counter() - started
    random_rows = rng.choice(len(images), target, replace=False)
    class_sizes = np.bincount(labels, minlength=10)
    oracle_counts = allocate(class_sizes, target, rng)

    def describe(rows: np.ndarray | None, counts: np.ndarray | None = None) -> dict[str, float]:
        counts = np.bincount(labels[rows], minlength=10) if counts is None else counts
        smallest = int(np.argmin(class_sizes))
        return {
            "class_entropy": round(normalised_entropy(counts), 4),
            "smallest_class_share": round(float(counts[smallest] / counts.sum()), 4),
            "duplicate_share": round(float(is_copy[rows].mean()), 4)
            if rows is not None
            else float("nan"),
        }

    random_stats, curated_stats, oracle_stats = (
        describe(random_rows),
        describe(curated),
        describe(None, oracle_counts),
    )
    gap_closed = (curated_stats["class_entropy"] - random_stats["class_entropy"]) / (
        oracle_stats["class_entropy"] - random_stats["class_entropy"]
    )
    out = {
        "pool": len(images),
        "duplicates_planted": int(is_copy.sum()),
        "duplicates_removed": found.removed,
        "target": target,
        "levels": levels,
        "dedup_threshold": args.dedup_threshold,
        "spherical": args.spherical,
        "random": random_stats,
        "curated": curated_stats,
        "oracle": oracle_stats,
        "entropy_gap_closed": round(gap_closed, 3),
        "smallest_share_ratio": round(
            curated_stats["smallest_class_share"] / max(random_stats["smallest_class_share"], 1e-9),
            2,
        ),
        "seconds": round(seconds, 1),
    }
    print(
        f"curation effect (pool {len(images)}, {is_copy.sum()} near-duplicates, {found.removed} "
        "removed): "
        f"class entropy random {random_stats['class_entropy']} / curated "
        f"{curated_stats['class_entropy']} / "
        f"oracle {oracle_stats['class_entropy']} → {gap_closed:.0%} of the gap closed; smallest "
        "class share "
        f"{random_stats['smallest_class_share']} → {curated_stats['smallest_class_share']}; "
        "duplicate share "
        f"{random_stats['duplicate_share']} → {curated_stats['duplicate_share']} ({seconds:.1f} s)"
    )
    return out


BENCHMARKS = {
    "rings": rings,
    "kmeans": kmeans_throughput,
    "memory": memory,
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
        "--levels", default="[[150, 3, 10], [15, 3, 5]]", help="effect: hierarchy levels (JSON)"
    )
    parser.add_argument(
        "--dedup-threshold", type=float, default=0.98, help="effect: cosine threshold"
    )
    parser.add_argument("--spherical", action="store_true", help="effect: spherical k-means")
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
