"""The curation report's copy-removal section: example pairs (kept | removed) per method, and
copies of evaluation images (pool image | evaluation image), so a person can check the removals.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sslflow.curation.build import DedupSummary, ExamplePair

MAX_PAIRS_SHOWN = 24


def plot_pairs(
    pairs: Sequence[ExamplePair],
    images: Mapping[str, np.ndarray],
    titles: tuple[str, str],
    path: Path,
) -> Path | None:
    """A grid with one pair per row: the two images side by side, the method and its score.

    Pairs whose images were not found are left out; None when none remains.
    """
    shown = [p for p in pairs if p[0] in images and p[1] in images][:MAX_PAIRS_SHOWN]
    if not shown:
        return None
    columns = 4  # two pairs per figure row
    rows = (len(shown) + 1) // 2
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for number, (first, second, method, score) in enumerate(shown):
        for side, key in enumerate((first, second)):
            ax = axes[number // 2, 2 * (number % 2) + side]
            image = images[key]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            label = titles[side] if side == 0 else f"{titles[side]} ({method} {score:.2f})"
            ax.set_title(f"{label}\n{key[-18:]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def copies_section(
    dedup: DedupSummary,
    pool_images: Mapping[str, np.ndarray],
    eval_images: Mapping[str, np.ndarray],
    out: Path,
) -> str:
    """HTML: the removal counts and the two pair grids (written next to the page)."""
    counts = ", ".join(f"{m} {n}" for m, n in dedup.removed_by_method.items()) or "none"
    against = dedup.decontaminated_against or "no evaluation set (eval_split not materialised)"
    duplicates = plot_pairs(dedup.pairs, pool_images, ("kept", "removed"), out / "copies.png")
    contaminated = plot_pairs(
        dedup.contaminated,
        {**pool_images, **eval_images},
        ("removed from pool", "evaluation image"),
        out / "eval_copies.png",
    )
    figures = "".join(
        f'<p><img src="{p.name}" alt="{p.stem}" style="max-width:100%"></p>'
        for p in (duplicates, contaminated)
        if p
    )
    return (
        "<h2>Copies removed before clustering</h2>"
        f"<p>{dedup.duplicates_removed} duplicates in {dedup.duplicate_groups} groups "
        f"(by method: {html.escape(counts)}); {dedup.contaminated_removed} copies of "
        f"evaluation images, compared with {html.escape(against)}.</p>{figures}"
    )


def example_keys(dedup: DedupSummary) -> tuple[set[str], set[str]]:
    """Keys of the example images: (pool keys, evaluation keys)."""
    pool = {k for a, b, _, _ in dedup.pairs for k in (a, b)}
    pool |= {a for a, _, _, _ in dedup.contaminated}
    return pool, {b for _, b, _, _ in dedup.contaminated}
