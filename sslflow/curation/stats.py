"""Small statistics shared by the curation steps, their metrics and their checks."""

from __future__ import annotations

import numpy as np


def normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of ``counts`` (K,) divided by log K: 1 = uniform, 0 = one bin holds all.

    K counts every bin, empty ones included, so empty clusters lower the score.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if len(counts) < 2 or total <= 0:
        return 1.0
    shares = counts[counts > 0] / total
    return float(-(shares * np.log(shares)).sum() / np.log(len(counts)))


def size_quantiles(sizes: np.ndarray) -> dict[str, float]:
    """min, p10, median, p90 and max of cluster sizes."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if not len(sizes):
        return {"min": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}
    p10, p50, p90 = np.quantile(sizes, [0.1, 0.5, 0.9])
    return {
        "min": float(sizes.min()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "max": float(sizes.max()),
    }
