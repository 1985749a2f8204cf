"""Curation report: HTML page plus PNG plots (matplotlib only).

Plots: cluster sizes per level, pool vs curated (log scale); a treemap of the hierarchy sized
by curated count with thumbnails of the samples nearest each top-level centroid (in the spirit
of DendroMap, Bertucci et al., 2022); a 2-D PCA projection of the leaf centroids; class shares
of pool vs curated when labels exist (labels are used only here).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sslflow.curation.hierarchy_store import Hierarchy
from sslflow.curation.sampling import CuratedIndex
from sslflow.curation.stats import normalised_entropy

Rect = tuple[float, float, float, float]
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "td,th{padding:2px 10px;text-align:right}"
)


def squarify(
    values: Sequence[float], x: float, y: float, width: float, height: float
) -> list[Rect]:
    """Squarified treemap layout (Bruls, Huizing and van Wijk, 2000): one rectangle per value.

    Hand-written because the ``squarify`` package is not a dependency and matplotlib has no
    treemap. ``values`` must be sorted in decreasing order and positive; rectangles
    (x, y, w, h) fill the box with areas proportional to the values.
    """
    total = float(sum(values))
    if not values or total <= 0:
        return []
    scaled = [v * width * height / total for v in values]
    rects: list[Rect] = []
    row: list[float] = []
    remaining = list(scaled)
    while remaining:
        side = min(width, height)
        candidate = row + [remaining[0]]
        if not row or _worst(candidate, side) <= _worst(row, side):
            row = candidate
            remaining.pop(0)
            continue
        x, y, width, height = _lay_row(row, x, y, width, height, rects)
        row = []
    _lay_row(row, x, y, width, height, rects)
    return rects


def _worst(row: list[float], side: float) -> float:
    area = sum(row)
    return max(max(side**2 * r / area**2, area**2 / (side**2 * r)) for r in row)


def _lay_row(
    row: list[float], x: float, y: float, width: float, height: float, out: list[Rect]
) -> Rect:
    """Place ``row`` along the shorter side; returns the box left over."""
    area = sum(row)
    if width >= height:
        thickness = area / height
        offset = y
        for value in row:
            out.append((x, offset, thickness, value / thickness))
            offset += value / thickness
        return x + thickness, y, width - thickness, height
    thickness = area / width
    offset = x
    for value in row:
        out.append((offset, y, value / thickness, thickness))
        offset += value / thickness
    return x, y + thickness, width, height - thickness


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows.

    Attributes:
        hierarchy: the built hierarchy.
        curated: the curated selection.
        labels: (N,) int64 class of every embedding row (-1 = unknown), or None.
        classes: class names, or None.
        thumbnails: top-level cluster → a few uint8 images (H, W) or (H, W, C).
        extra: headline numbers shown in the summary table.
        rounds: one row per curation round (earlier rounds and this one), shown side by side.
        class_balance: a sentence on the class balance against a random subset
            (:func:`class_balance_sentence`), shown above the summary table.
        sections: further HTML sections, shown after the levels (e.g. the removed copies).
    """

    hierarchy: Hierarchy
    curated: CuratedIndex
    labels: np.ndarray | None = None
    classes: Sequence[str] | None = None
    thumbnails: dict[int, list[np.ndarray]] | None = None
    extra: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] | None = None
    class_balance: str | None = None
    sections: list[str] | None = None


def class_balance_sentence(summary: dict[str, Any]) -> str | None:
    """Whether curation improved the class balance against a random subset of the same size,
    with the numbers; None without labels (no ``class_balance_vs_random`` in ``summary``)."""
    verdict = summary.get("class_balance_vs_random")
    if verdict is None:
        return None
    return (
        f"Class balance {verdict} against a random subset of the same size: normalised class "
        f"entropy {summary['class_entropy_curated']:.3f} vs {summary['class_entropy_random']:.3f}"
        f" (pool {summary['class_entropy_pool']:.2f}); smallest class "
        f"({summary['smallest_class']}) share {summary['smallest_class_share_curated']:.1%} vs "
        f"{summary['smallest_class_share_random']:.1%}."
    )


def thumbnail_rows(hierarchy: Hierarchy, per_cluster: int) -> dict[int, list[int]]:
    """Embedding rows to show for each top-level cluster.

    The ``per_cluster`` leaves whose centroids are nearest the top-level centroid each give
    their most central sample.
    """
    top = hierarchy.n_levels - 1
    offsets, members = hierarchy.clusters(0)
    leaves_centroids, paths, rows = hierarchy.centroids(0), hierarchy.leaf_paths(), hierarchy.rows()
    chosen: dict[int, list[int]] = {}
    for cluster, centre in enumerate(hierarchy.centroids(top)):
        leaves = np.flatnonzero((paths[:, top] == cluster) & (np.diff(offsets) > 0))
        nearest = leaves[
            np.argsort(((leaves_centroids[leaves] - centre) ** 2).sum(1))[:per_cluster]
        ]
        chosen[cluster] = [int(rows[members[offsets[leaf]]]) for leaf in nearest]
    return chosen


def plot_sizes(inputs: ReportInputs, path: Path) -> Path:
    """Cluster sizes per level, largest first, pool vs curated, log scale."""
    levels = len(inputs.curated.counts)
    fig, axes = plt.subplots(1, levels, figsize=(5 * levels, 3.6), squeeze=False)
    for level, ax in enumerate(axes[0]):
        pool = np.sort(inputs.curated.pool_counts[level])[::-1]
        curated = np.sort(inputs.curated.counts[level])[::-1]
        ax.plot(np.arange(1, len(pool) + 1), np.maximum(pool, 0.8), label="pool")
        ax.plot(np.arange(1, len(curated) + 1), np.maximum(curated, 0.8), label="curated")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="cluster rank",
            ylabel="samples",
            title=f"level {level}: {len(pool)} clusters",
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_treemap(inputs: ReportInputs, path: Path) -> Path:
    """Top-level clusters sized by curated count, split into their children, with thumbnails."""
    top = len(inputs.curated.counts) - 1
    counts = inputs.curated.counts[top]
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    fig, ax = plt.subplots(figsize=(10, 7))
    cmap = plt.get_cmap("tab20")
    for rank, (cluster, (x, y, w, h)) in enumerate(
        zip(order, squarify([float(counts[c]) for c in order], 0, 0, 1, 1), strict=True)
    ):
        if top > 0:
            children = np.flatnonzero(inputs.hierarchy.assignments(top) == cluster)
            child_counts = inputs.curated.counts[top - 1][children]
            kept = sorted((float(v) for v in child_counts if v > 0), reverse=True)
            for cx, cy, cw, ch in squarify(kept, x, y, w, h):
                ax.add_patch(
                    plt.Rectangle(
                        (cx, cy), cw, ch, facecolor=cmap(rank % 20), edgecolor="white", lw=0.4
                    )
                )
        ax.add_patch(
            plt.Rectangle(
                (x, y), w, h, fill=top == 0, facecolor=cmap(rank % 20), edgecolor="black", lw=1.2
            )
        )
        ax.text(x + 0.005, y + h - 0.005, f"{cluster}: {counts[cluster]}", fontsize=7, va="top")
        for index, image in enumerate((inputs.thumbnails or {}).get(cluster, [])[:3]):
            size = min(w, h) / 3.5
            if size < 0.02:
                break
            left = x + 0.005 + index * (size + 0.004)
            ax.imshow(
                image,
                cmap="gray" if image.ndim == 2 else None,
                extent=(left, left + size, y + 0.005, y + 0.005 + size),
                zorder=3,
            )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"hierarchy treemap (level {top} clusters, sized by curated count)",
    )
    ax.set_aspect("auto")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_centroids(inputs: ReportInputs, path: Path) -> Path:
    """Leaf centroids projected on their first two principal components."""
    from sklearn.decomposition import PCA

    centroids = inputs.hierarchy.centroids(0).astype(np.float64)
    points = (
        PCA(n_components=2, random_state=0).fit_transform(centroids)
        if centroids.shape[1] > 2
        else centroids
    )
    paths = inputs.hierarchy.leaf_paths()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, counts, title in (
        (axes[0], inputs.curated.pool_counts[0], "pool"),
        (axes[1], inputs.curated.counts[0], "curated"),
    ):
        sizes = 4 + 150 * counts / max(counts.max(), 1)
        ax.scatter(
            points[:, 0],
            points[:, 1],
            s=sizes,
            c=paths[:, -1],
            cmap="tab20",
            alpha=0.7,
            linewidths=0,
        )
        ax.set(title=f"leaf centroids, marker size = {title} count", xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def class_shares(
    labels: np.ndarray, rows: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class shares (n_classes,) of the pool and of the selected ``rows`` (unknown labels
    ignored)."""
    pool = np.bincount(labels[labels >= 0], minlength=n_classes).astype(np.float64)
    chosen = labels[rows]
    curated = np.bincount(chosen[chosen >= 0], minlength=n_classes).astype(np.float64)
    return pool / max(pool.sum(), 1), curated / max(curated.sum(), 1)


def plot_classes(inputs: ReportInputs, path: Path) -> Path | None:
    """Class shares, pool vs curated; None when there are no labels."""
    if inputs.labels is None or not (inputs.labels >= 0).any():
        return None
    n_classes = int(inputs.labels.max()) + 1
    pool, curated = class_shares(inputs.labels, inputs.curated.rows, n_classes)
    names = list(inputs.classes or [str(c) for c in range(n_classes)])
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * n_classes), 3.8))
    index = np.arange(n_classes)
    ax.bar(index - 0.2, pool, 0.4, label="pool")
    ax.bar(index + 0.2, curated, 0.4, label="curated")
    ax.set_xticks(index, names, rotation=45, ha="right")
    ax.set(ylabel="share", title="class shares (labels used only for this plot)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(inputs: ReportInputs, out_dir: str | Path) -> Path:
    """Write ``index.html`` and its PNGs into ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [
        plot_sizes(inputs, out / "cluster_sizes.png"),
        plot_treemap(inputs, out / "treemap.png"),
        plot_centroids(inputs, out / "centroids.png"),
        plot_classes(inputs, out / "class_shares.png"),
    ]
    summary = inputs.curated.summary()
    if inputs.labels is not None and (inputs.labels >= 0).any():
        n_classes = int(inputs.labels.max()) + 1
        pool, curated = class_shares(inputs.labels, inputs.curated.rows, n_classes)
        summary["class_entropy_pool"] = normalised_entropy(pool)
        summary["class_entropy_curated"] = normalised_entropy(curated)
    summary.update(inputs.extra or {})
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in summary.items()
    )
    level_rows = "".join(
        f"<tr><td>{s['level']}</td><td>{s['n_clusters']}</td><td>{s['n_resampling_steps']}</td>"
        f"<td>{s['sample_size']}</td><td>{_fmt(s['inertia'])}</td><td>{_fmt(s['size_entropy'])}</td>"
        f"<td>{s['empty_clusters']}</td></tr>"
        for s in inputs.hierarchy.stats
    )
    figures = "".join(
        f'<p><img src="{p.name}" alt="{p.stem}" style="max-width:100%"></p>' for p in images if p
    )
    rounds = _rounds_table(inputs.rounds) if inputs.rounds else ""
    balance = f"<p>{html.escape(inputs.class_balance)}</p>" if inputs.class_balance else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sslflow curation report</title>
<style>{STYLE}</style>
</head><body>
<h1>Curation report</h1>
<h2>Summary</h2>{balance}<table>{rows}</table>
<h2>Levels</h2><p>Geometry: {inputs.hierarchy.geometry}.</p>
<table><tr><th>level</th><th>K</th><th>resampling steps</th><th>sample size</th>
<th>inertia</th><th>size entropy</th><th>empty</th></tr>{level_rows}</table>
{rounds}
{"".join(inputs.sections or [])}
<h2>Plots</h2>{figures}
</body></html>
"""
    target = out / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def _rounds_table(rounds: list[dict[str, Any]]) -> str:
    """Curation rounds side by side: round t+1 embeds with the model trained on round t."""
    columns = list(dict.fromkeys(k for row in rounds for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(c, ''))}</td>" for c in columns) + "</tr>"
        for row in rounds
    )
    return f"<h2>Curation rounds</h2><table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
