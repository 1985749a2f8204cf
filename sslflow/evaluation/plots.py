"""The probing report's plots, each a function from probe results or features to one PNG.

matplotlib's object API (``Figure``, never pyplot): no global figure state leaks between reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sslflow.evaluation.knn import DEFAULT_TEMPERATURE, LIGHTLY_SETTING
from sslflow.evaluation.linear import LinearProbeKind, classification_summary
from sslflow.evaluation.results import ModelProbe

PROJECTION_POINTS = 2000


class Projection(str, Enum):
    """How test features are projected to 2-D for the scatter plot."""

    PCA = "pca"
    TSNE = "tsne"  # scikit-learn t-SNE: ~10-30 s on 2k points on 2 CPU cores


def headline_predictions(probe: ModelProbe) -> tuple[str, np.ndarray] | None:
    """The classifier whose errors the report plots: logistic, else SGD linear, else kNN k=20.

    Returns its name and its (N_test,) int64 predictions, or None when nothing was probed.
    """
    for kind in (LinearProbeKind.LOGISTIC, LinearProbeKind.SGD):
        result = probe.linear_result(kind)
        if result is not None:
            return f"linear ({kind.value})", result.predictions
    knn = probe.headline_knn()
    return (f"kNN k={knn.k_requested}", knn.predictions) if knn else None


def plot_accuracy_vs_k(probes: Sequence[ModelProbe], path: Path) -> Path:
    """kNN top-1 against k at T=0.07 per feature extractor (T=0.1 at k=200 as a hollow marker)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for probe in probes:
        results = sorted(
            (r for r in probe.knn if r.temperature == DEFAULT_TEMPERATURE),
            key=lambda r: r.k_requested,
        )
        line = axes.plot(
            [r.k_requested for r in results],
            [r.top1 for r in results],
            marker="o",
            label=probe.role.label,
        )
        lightly = [r for r in probe.knn if (r.k_requested, r.temperature) == LIGHTLY_SETTING]
        for r in lightly:
            axes.plot(
                [r.k_requested], [r.top1], marker="s", fillstyle="none", color=line[0].get_color()
            )
    axes.set_xscale("log")
    axes.set_xlabel("k (neighbours)")
    axes.set_ylabel("top-1 accuracy")
    axes.set_title(f"weighted kNN, T={DEFAULT_TEMPERATURE:g} (squares: k=200, T=0.1)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100)
    return path


def plot_per_class(
    probes: Sequence[ModelProbe], test_labels: np.ndarray, classes: Sequence[str], path: Path
) -> Path:
    """Per-class test accuracy of each extractor's headline classifier, as grouped bars.

    Args:
        probes: one bar per class for each probe.
        test_labels: (N_test,) int64 true classes.
        classes: class names, index → name.
        path: the PNG to write.
    """
    figure = Figure(figsize=(max(6, 0.7 * len(classes)), 4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(probes), 1)
    for i, probe in enumerate(probes):
        chosen = headline_predictions(probe)
        if chosen is None:
            continue
        name, predictions = chosen
        per_class, _ = classification_summary(test_labels, predictions, len(classes))
        axes.bar(
            np.arange(len(classes)) + i * width,
            per_class,
            width,
            label=f"{probe.role.label}: {name}",
        )
    axes.set_xticks(
        np.arange(len(classes)) + width * (len(probes) - 1) / 2,
        list(classes),
        rotation=45,
        ha="right",
    )
    axes.set_ylim(0, 1.18)  # headroom for the legend above the bars
    axes.set_ylabel("accuracy")
    axes.set_title("per-class test accuracy")
    axes.legend(fontsize="small", loc="upper center", ncol=len(probes))
    figure.savefig(path, dpi=100)
    return path


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised (C, C) confusion matrix (rows: true class) with counts in the cells."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.6 * len(classes))
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    if len(classes) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            axes.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[row, col] > 0.5 else "black",
            )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.savefig(path, dpi=100)
    return path


def project_2d(
    features: np.ndarray, method: Projection = Projection.PCA, seed: int = 0
) -> np.ndarray:
    """(N, D) → (N, 2) by PCA, or t-SNE initialised from PCA."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if method is Projection.TSNE:
        from sklearn.manifold import TSNE

        return TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=min(30.0, len(x) - 1)
        ).fit_transform(x)
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def plot_projection(
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    path: Path,
    method: Projection = Projection.PCA,
    max_points: int = PROJECTION_POINTS,
    seed: int = 0,
) -> Path:
    """Scatter of at most ``max_points`` (N, D) features (a seeded subset) in 2-D, by class.

    ``labels`` are the (N,) classes of those rows.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(features), size=min(max_points, len(features)), replace=False))
    points = project_2d(np.asarray(features[rows]), method, seed)
    figure = Figure(figsize=(6.5, 5), layout="constrained")
    axes = figure.subplots()
    for index, name in enumerate(classes):
        mask = labels[rows] == index
        axes.scatter(points[mask, 0], points[mask, 1], s=6, label=name)
    axes.set_title(f"test features, {method.value.upper()} ({len(rows)} points)")
    axes.legend(fontsize="small", markerscale=2, loc="best")
    figure.savefig(path, dpi=100)
    return path
