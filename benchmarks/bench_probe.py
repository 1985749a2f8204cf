"""Benchmark the probes on 60k train × 10k test × 512-d features.

Prints, measured in the same run on the same seeded features:

* sslflow's weighted kNN (all five default (k, T) settings in one pass, and k=200 alone)
  against a bare torch matmul + top-200 over the same chunks (goal: ≤ 1.2×);
* scikit-learn's brute-force ``KNeighborsClassifier`` (cosine, the same exp(sim/T) weights,
  k=200) against sslflow's k=200 alone;
* the SGD learning-rate sweep and the logistic-regression C sweep on the same features.

Run: ``.venv/bin/python benchmarks/bench_probe.py [--small] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslflow.evaluation.knn import DEFAULT_SETTINGS, default_chunk_size, weighted_knn
from sslflow.evaluation.linear import DEFAULT_LRS, logistic_regression_probe, sgd_probe


@dataclass(frozen=True)
class Shapes:
    train: int
    test: int
    dim: int
    classes: int


FULL = Shapes(60_000, 10_000, 512, 10)
SMALL = Shapes(6_000, 1_000, 128, 10)


def features(
    shapes: Shapes, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian clusters (one per class) plus noise, so accuracies are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    # Centre coordinates with std 0.15 under unit noise: classes overlap, top-1 stays below 1.
    centres = 0.15 * rng.normal(size=(shapes.classes, shapes.dim)).astype(np.float32)
    train_y = rng.integers(0, shapes.classes, shapes.train)
    test_y = rng.integers(0, shapes.classes, shapes.test)
    train_x = centres[train_y] + rng.standard_normal((shapes.train, shapes.dim), dtype=np.float32)
    test_x = centres[test_y] + rng.standard_normal((shapes.test, shapes.dim), dtype=np.float32)
    return train_x, train_y, test_x, test_y


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (the machine is shared: the minimum is the least
    noisy)."""
    best, out = math.inf, None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def bare_matmul_topk(bank: torch.Tensor, queries: torch.Tensor, k: int, chunk: int) -> None:
    """The floor: normalised (chunk, D) @ (D, N) blocks and top-k, nothing else."""
    bank = F.normalize(bank, dim=1)
    for start in range(0, queries.shape[0], chunk):
        torch.topk(F.normalize(queries[start : start + chunk], dim=1) @ bank.T, k, dim=1)


def sklearn_knn(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float
) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    def weights(distance: np.ndarray) -> np.ndarray:
        return np.exp((1.0 - distance) / temperature)  # cosine distance = 1 - similarity

    model = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine", weights=weights)
    return model.fit(train_x, train_y).predict(test_x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help=f"{SMALL} instead of {FULL}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (kNN only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--skip-linear", action="store_true")
    parser.add_argument("--cs", default="0.01,1", help="C values of the timed logistic sweep")
    parser.add_argument("--sgd-epochs", type=int, default=10)
    args = parser.parse_args()
    shapes = SMALL if args.small else FULL
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}; shapes {shapes}"
    )

    train_x, train_y, test_x, test_y = features(shapes)
    bank, queries = torch.from_numpy(train_x).to(device), torch.from_numpy(test_x).to(device)
    labels, test_labels = torch.from_numpy(train_y).to(device), torch.from_numpy(test_y).to(device)
    chunk = default_chunk_size(shapes.train)
    k_max = max(k for k, _ in DEFAULT_SETTINGS)

    bare, _ = timed(lambda: bare_matmul_topk(bank, queries, k_max, chunk), args.repeats, sync)
    ours_all, results = timed(
        lambda: weighted_knn(bank, labels, queries, test_labels, DEFAULT_SETTINGS),
        args.repeats,
        sync,
    )
    ours_200, (lightly,) = timed(
        lambda: weighted_knn(bank, labels, queries, test_labels, [(200, 0.1)]), args.repeats, sync
    )
    print(f"bare matmul+top{k_max} (chunk {chunk}): {bare:.2f} s")
    print(
        f"sslflow kNN, {len(DEFAULT_SETTINGS)} settings in one pass: {ours_all:.2f} s  "
        f"ratio to bare {ours_all / bare:.2f}x  (goal <= 1.2x)"
    )
    print(f"sslflow kNN, k=200 T=0.1 only: {ours_200:.2f} s  ratio to bare {ours_200 / bare:.2f}x")
    print("  top-1: " + ", ".join(f"{r.name}={r.top1:.4f}" for r in results))  # type: ignore[union-attr]

    if not args.skip_sklearn:
        sk_time, sk_pred = timed(
            lambda: sklearn_knn(train_x, train_y, test_x, 200, 0.1), 1, lambda: None
        )
        agree = float(np.mean(sk_pred == lightly.predictions))
        print(
            f"scikit-learn brute KNeighborsClassifier k=200 (cosine, exp weights): {sk_time:.2f} "
            "s  "
            f"ratio sklearn/sslflow {sk_time / ours_200:.1f}x  (same predictions on {agree:.2%})"
        )

    if not args.skip_linear:
        sgd_time, sgd = timed(
            lambda: sgd_probe(train_x, train_y, test_x, test_y, epochs=args.sgd_epochs),
            1,
            lambda: None,
        )
        print(
            f"SGD linear sweep, {len(DEFAULT_LRS)} learning rates x {args.sgd_epochs} epochs + "
            "refit: "
            f"{sgd_time:.1f} s  top-1 {sgd.top1:.4f} at lr={sgd.chosen:g}"
        )  # type: ignore[union-attr]
        cs = tuple(float(c) for c in args.cs.split(","))
        lr_time, logistic = timed(
            lambda: logistic_regression_probe(train_x, train_y, test_x, test_y, cs=cs),
            1,
            lambda: None,
        )
        print(
            f"logistic regression sweep, C in {cs} + refit: {lr_time:.1f} s  "
            f"top-1 {logistic.top1:.4f} at C={logistic.chosen:g}"
        )  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
