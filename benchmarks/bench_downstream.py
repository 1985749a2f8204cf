"""Downstream effect of curation: pretrain on a random and on a curated subset of one size of
the step-imbalanced pool (b), then weighted kNN on Fashion-MNIST's official balanced split.

Run: ``.venv/bin/python benchmarks/bench_downstream.py [--steps 250] [--seeds 0,1]
[--embedders pixels,ssl] [--ssl-steps 300]``. Every subset trains the same SimCLR recipe for
the same number of steps; two seeds per subset measure the run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_curation import (
    SSL_EMBEDDER,
    _copy_groups,
    _curate,
    _write_pool,
    add_curation_options,
    ssl_round_one,
    step_pool,
)

KNN = (20, 0.07)  # k, T: the probing protocol of docs/benchmarks/pretrain.md


def _subset_shards(manifest: Any, keys: list[str], folder: Path) -> Any:
    """The pool's samples with these keys as their own shard set (bytes passed through)."""
    from sslflow.curation.shards import SelectedSource, pool_source
    from sslflow.data import write_shards

    source = SelectedSource(pool_source(manifest), frozenset(keys))
    return write_shards(source, folder, shard_size=2000, progress=False)


def _knn(backbone_path: str, rare: np.ndarray) -> dict[str, float]:
    """Top-1 over the 10k test images (bank: the 60k train images) and mean accuracy on the
    pool's rare classes."""
    from sslflow.data.datasets import fashion_mnist
    from sslflow.evaluation.knn import weighted_knn
    from sslflow.models import load_backbone

    backbone = load_backbone(backbone_path)
    train, test = fashion_mnist(split="train"), fashion_mnist(split="test")

    def embed(images: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(images).unsqueeze(1)
        return torch.cat([backbone.embed(batch[s : s + 2000]) for s in range(0, len(batch), 2000)])

    test_y = torch.from_numpy(test.labels).long()
    result = weighted_knn(
        embed(train.images),
        torch.from_numpy(train.labels).long(),
        embed(test.images),
        test_y,
        settings=[KNN],
    )[0]
    correct = result.predictions == test.labels
    per_class = np.array([correct[test.labels == c].mean() for c in range(10)])
    return {
        "top1": round(float(result.top1), 4),
        "rare_mean": round(float(per_class[rare].mean()), 4),
        "frequent_mean": round(float(np.delete(per_class, rare).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=250, help="training steps per subset")
    parser.add_argument("--seeds", default="0,1", help="training seeds per subset")
    parser.add_argument(
        "--embedders",
        default="pixels",
        help=f"curation embedders (pixels, resnet18, {SSL_EMBEDDER})",
    )
    parser.add_argument("--ssl-steps", type=int, default=300, help="steps of the ssl embedder")
    add_curation_options(parser)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.geometry = args.geometries.split(",")[0]
    pool = step_pool()
    counts = np.bincount(pool.labels, minlength=10)
    rare = np.flatnonzero(counts < counts.mean())  # the 7 classes of 150 (+ their copies)
    target = round(len(pool.images) * 0.2)
    results: dict[str, Any] = {"pool": len(pool.images), "target": target, "rare": rare.tolist()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = _write_pool(pool, folder)
        subsets: dict[str, list[str]] = {}
        for embedder in args.embedders.split(","):
            emb, curated, _ = _curate(manifest, folder, embedder, target, args, seed=0)
            subsets[f"curated/{embedder}"] = [emb.keys()[row] for row in curated.rows]
            pool_keys = emb.keys()
        rows = np.random.default_rng(0).choice(len(pool_keys), target, replace=False)
        subsets["random"] = [pool_keys[row] for row in rows]
        for name, chosen in subsets.items():
            shards = _subset_shards(manifest, chosen, folder / name.replace("/", "-"))
            # labels by pool row (the image folder numbers its classes in another order)
            chosen_labels = pool.labels[_copy_groups(chosen)]
            share = np.isin(chosen_labels, rare).mean()
            runs = []
            for seed in (int(s) for s in args.seeds.split(",")):
                run_folder = folder / f"train-{name.replace('/', '-')}"
                path = ssl_round_one(shards, run_folder, args.steps, seed=seed)
                runs.append({"seed": seed, **_knn(path, rare)})
                print(f"downstream {name} seed {seed}: {runs[-1]}", flush=True)
            results[name] = {"rare_share": round(float(share), 4), "runs": runs}
    print("\n| subset | rare-class share | seed | kNN top-1 | rare-class mean | frequent mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        if isinstance(row, dict):
            for run in row["runs"]:
                print(
                    f"| {name} | {row['rare_share']:.3f} | {run['seed']} | {run['top1']:.4f} | "
                    f"{run['rare_mean']:.4f} | {run['frequent_mean']:.4f} |"
                )
    results["load_average"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
