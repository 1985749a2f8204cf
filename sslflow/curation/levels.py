"""The levels of a hierarchy: parsing, checks, and ``levels: auto`` (levels sized to the pool).

A level is ``(n_clusters, n_resampling_steps, sample_size)``; levels go from the finest
(level 0, clusters of the embeddings) to the coarsest. ``"auto"`` is resolved by
:func:`auto_levels` against the rows actually clustered (after deduplication and dropped
NaN rows), and the resolved numbers are what a built hierarchy records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from typing import Any

from sslflow.curation.hierarchy_store import HierarchyError

AUTO = "auto"
"""The ``levels`` value that sizes the levels to the pool (:func:`auto_levels`)."""

# Constants of auto_levels, from Vo et al. (2024), "Automatic Data Curation for SSL", Sec. 4-5.
POINTS_PER_LEAF = 150
"""Points per level-0 cluster. The paper uses ~75 (10M clusters on 743M images) with 4 levels;
on Fashion-MNIST train (60k, pixel embeddings, 20k curated) coarser leaves balanced better: two
levels of 600/60, 400/40 or 200/20 clusters passed the curated_index check's top-level entropy
of 0.9, while 75 points per leaf (three levels, 19 at the top) fell under it (measured for
commit d944f12 on 2026-12-02; no committed command repeats it). Level 0, the k-means over every
embedding, is also the costly one, and its time grows with its cluster count."""

RATIO = 10
"""Clusters of a level per cluster of the level above: the paper's levels are 20x, 10x and 5x
apart (10M → 500k → 50k → 10k); 10 is their middle, and gives Fashion-MNIST train the two
levels 400/40 measured above."""

MIN_TOP_CLUSTERS = 10
"""No level with fewer clusters is added: balanced sampling gives each top-level cluster an
equal share, so a top level of 2-9 clusters would force equal shares onto a few very coarse
groups (a small odd group would get 1/3 of the sample) while balancing little more than the
level below already does."""

MAX_LEVELS = 4
"""The paper's largest hierarchy (743M images) has 4 levels; we go no deeper than it did, as
each level adds k-means runs for a gain nobody measured."""

RESAMPLING_STEPS = 3
"""Resampling steps per level (the project's previous default): each step costs a k-means on
the pool plus one assignment pass over the level's whole input, so a level costs 1 + 3 k-means;
the paper's 2-D toy runs 10, which makes a level cost 11 k-means, nearly 3x more."""

LEAF_SAMPLE_SIZE = 15
"""Points per level-0 cluster in each resampling pool: 1/5 of a ``POINTS_PER_LEAF`` cluster, so
resampling thins dense clusters instead of taking them whole (the paper's 2-D toy uses r = 15
at level 0 too)."""

UPPER_SAMPLE_SIZE = 5
"""Centroids per cluster in the resampling pool of the levels above level 0: about 60% of the
``RATIO`` = 10 children of a cluster, the share of the paper's 2-D toy (r = 2 of ~3.3 children
at its level 1), so only the clusters with more children than average are thinned."""

MIN_MEDIAN_SIZE = 2
"""A level whose median cluster holds fewer points (children, above level 0) gets a warning:
most of its clusters are single points, so there is nothing to balance inside them."""


@dataclass(frozen=True)
class Level:
    """One level: K clusters, m resampling steps, r points per cluster in each resampling pool."""

    n_clusters: int
    n_resampling_steps: int = 0
    sample_size: int = 1

    @classmethod
    def parse(cls, value: Level | Sequence[int]) -> Level:
        if isinstance(value, Level):
            return value
        if isinstance(value, str) or len(value) != 3:
            raise HierarchyError(
                f"a level is (n_clusters, n_resampling_steps, sample_size), got {value!r}"
            )
        return cls(*(int(v) for v in value))


Levels = str | tuple[Level, ...]
"""``"auto"`` or explicit levels, finest first."""


def parse_levels(value: Any) -> Levels:
    """``"auto"`` (any case) or a tuple of :class:`Level` from ``value``.

    Raises:
        HierarchyError: a string other than ``"auto"``, or a level that is not three integers.
    """
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        if isinstance(value, str):
            raise TypeError(value)
        return tuple(Level.parse(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise HierarchyError(
            'levels: expected "auto" (levels sized to the pool) or a list of [n_clusters, '
            "n_resampling_steps, sample_size] integers per level, finest first, e.g. "
            f"[[400, 3, 10], [50, 3, 5]]; got {value!r}"
        ) from exc


def levels_value(levels: Levels) -> str | list[list[int]]:
    """``levels`` as JSON or config holds it: ``"auto"`` or a list of lists."""
    return levels if isinstance(levels, str) else [list(astuple(level)) for level in levels]


def auto_levels(n_points: int) -> tuple[Level, ...]:
    """Levels sized to a pool of ``n_points`` rows (what ``levels: auto`` resolves to).

    Level 0 gets ``round(n_points / 150)`` clusters, at least 2 and at most ``n_points // 2``
    (so a cluster holds 2 points on average even in a tiny pool); each next level has 10× fewer
    (rounded), while it keeps at least 10 clusters, up to 4 levels. Every level runs 3
    resampling steps with 15 points per cluster in the pool at level 0, 5 above. The module's
    constants say where each number comes from. Examples:

    * 2,019 photos: ``[(13, 3, 15)]``
    * 16,380 points: ``[(109, 3, 15), (11, 3, 5)]``
    * 60,000 (Fashion-MNIST train): ``[(400, 3, 15), (40, 3, 5)]``
    * 1,000,000: ``[(6667, 3, 15), (667, 3, 5), (67, 3, 5)]``

    Raises:
        HierarchyError: ``n_points < 1``.
    """
    if n_points < 1:
        raise HierarchyError(f"no rows to cluster ({n_points}); check the embeddings")
    k = max(1, min(n_points // 2, max(2, round(n_points / POINTS_PER_LEAF))))
    levels = [Level(k, RESAMPLING_STEPS, LEAF_SAMPLE_SIZE)]
    while len(levels) < MAX_LEVELS and round(k / RATIO) >= MIN_TOP_CLUSTERS:
        k = round(k / RATIO)
        levels.append(Level(k, RESAMPLING_STEPS, UPPER_SAMPLE_SIZE))
    return tuple(levels)


def resolve_levels(levels: Levels, n_points: int) -> tuple[Level, ...]:
    """Explicit levels as they are; ``"auto"`` as :func:`auto_levels` of ``n_points``."""
    return auto_levels(n_points) if isinstance(levels, str) else levels


def check_levels(levels: Sequence[Level], n_points: int) -> None:
    """Fail before any work when the levels cannot be built on ``n_points`` rows."""
    if not levels:
        raise HierarchyError('at least one level is needed, e.g. [(1000, 3, 10)], or "auto"')
    available = n_points
    for index, level in enumerate(levels):
        if level.n_clusters < 1 or level.n_resampling_steps < 0 or level.sample_size < 1:
            raise HierarchyError(
                f"level {index} {asdict(level)}: n_clusters and sample_size must be ≥ 1 and "
                "n_resampling_steps ≥ 0"
            )
        if index and level.n_clusters >= levels[index - 1].n_clusters:
            sizes = [lv.n_clusters for lv in levels]
            raise HierarchyError(
                f"levels must have strictly decreasing n_clusters (level {index - 1} → {index}: "
                f"{sizes}); order them from the finest level to the coarsest"
            )
        if level.n_clusters > available:
            what = "rows" if index == 0 else f"level {index - 1} centroids"
            raise HierarchyError(
                f"level {index} asks for {level.n_clusters} clusters but has only {available} "
                f"{what} to cluster; use n_clusters ≤ {available} (e.g. {max(1, available // 10)})"
                ' or levels: "auto"'
            )
        available = level.n_clusters


def small_clusters_message(index: int, level: Level, median: float, n_input: int) -> str | None:
    """The warning for a level whose median cluster size is under ``MIN_MEDIAN_SIZE``, or None.

    Args:
        index: the level (0 = clusters of the embeddings).
        level: its settings.
        median: median points per cluster (children per cluster above level 0).
        n_input: rows the level clustered (points at level 0, centroids of the level below).
    """
    if median >= MIN_MEDIAN_SIZE:
        return None
    what = "points" if index == 0 else "children (centroids of the level below)"
    if index == 0:
        suggested = f"levels: auto (here {levels_value(auto_levels(n_input))})"
    else:
        suggested = f"n_clusters ≤ {max(1, n_input // RATIO)} at this level, or levels: auto"
    return (
        f"level {index} (k={level.n_clusters} on {n_input} rows): the median cluster holds "
        f"{median:g} {what}, under {MIN_MEDIAN_SIZE}; most clusters are single points and "
        f"balanced sampling has nothing to balance inside them; use {suggested}"
    )
