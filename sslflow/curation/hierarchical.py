"""Hierarchical k-means with resampling (Vo et al., 2024, "Automatic Data Curation for
Self-Supervised Learning: A Clustering-Based Approach", Sec. 4), written from the paper.

Hand-written because no maintained library implements the resampling scheme.

Per level ``i`` with ``Level(n_clusters=K, n_resampling_steps=m, sample_size=r)``:

* step 0: seeded k-means (k-means++ then Lloyd) on the level's input;
* steps 1..m (the *resampling steps*; ``m`` counts only these, so ``m=0`` is plain k-means and
  a level runs ``1 + m`` k-means in all): take the ``r`` points closest to each current
  centroid (all of a cluster's points when it has fewer), run a fresh seeded k-means with K
  clusters on that pool, then reassign every input point of the level to the new centroids.

Because each cluster contributes at most ``r`` points to the pool, dense regions no longer
outweigh sparse ones, and the centroids spread more uniformly over the data's modes.
Level 0's input is the embeddings; level ``i+1``'s input is level ``i``'s centroids.

The folder a build writes, and its reader, are in :mod:`sslflow.curation.hierarchy_store`;
level parsing, checks and ``levels="auto"`` (levels sized to the pool) in
:mod:`sslflow.curation.levels`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.curation.assignment import assign
from sslflow.curation.comm import RankComm
from sslflow.curation.embedding_set import PIXELS_EMBEDDER
from sslflow.curation.hierarchy_store import Hierarchy, HierarchyError
from sslflow.curation.kmeans import KMeansConfig, kmeans
from sslflow.curation.levels import (
    Level,
    check_levels,
    levels_value,
    parse_levels,
    resolve_levels,
    small_clusters_message,
)
from sslflow.curation.rows import Rows, RowSubset, check_rows
from sslflow.curation.stats import normalised_entropy, size_quantiles
from sslflow.curation.storage import load_json, load_npy, save_json, save_npy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HierarchyConfig:
    """How to build the hierarchy.

    Attributes:
        levels: "auto" (levels sized to the clustered pool of N points: level 0 gets N/150
            clusters, each level above 10x fewer while it keeps 10 or more, at most 4 levels,
            3 resampling steps, sample size 15 at level 0 and 5 above; e.g. N = 60,000 gives
            [[400,3,15],[40,3,5]]; see sslflow.curation.levels.auto_levels), or explicit
            [n_clusters, n_resampling_steps, sample_size] per level, from the finest (level 0,
            clusters of the embeddings) to the coarsest, with strictly decreasing n_clusters.
            A built hierarchy records the resolved levels.
        seed: base seed; step ``s`` of level ``i`` seeds its k-means with ``seed + 1000 i + s``.
        spherical: true: cosine geometry (L2-normalised rows, spherical k-means at every level);
            false: Euclidean; null (auto): cosine for model embeddings, Euclidean for the pixels
            embedder. The resolved value is recorded with the hierarchy.
        max_iter: Lloyd iterations per k-means run.
        init_trials: k-means++ candidates per draw (None = scikit-learn's greedy 2 + log K).
        chunk_size: rows per streamed chunk.
        device: where k-means assignment runs: "auto" (the GPU when there is one, else the
            CPU), "cpu" or "cuda[:N]"; results agree across devices up to float32 rounding.
        drop_invalid: drop NaN/inf rows instead of failing on them.
        progress: show progress bars.
    """

    levels: str | tuple[Level, ...] = "auto"
    seed: int = 0
    spherical: bool | None = None
    max_iter: int = 50
    init_trials: int | None = None
    chunk_size: int = 16384
    device: str = "auto"
    drop_invalid: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", parse_levels(self.levels))

    def for_embedder(self, embedder: str) -> HierarchyConfig:
        """``spherical`` resolved for rows of ``embedder``; an explicit setting is kept."""
        if self.spherical is not None:
            return self
        return replace(self, spherical=embedder != PIXELS_EMBEDDER)

    def identity(self) -> dict[str, Any]:
        """The fields that change the result (a resumed build must match them)."""
        return {
            "levels": self.levels
            if isinstance(self.levels, str)
            else [asdict(level) for level in self.levels],
            "seed": self.seed,
            "spherical": self.spherical,
            "max_iter": self.max_iter,
            "init_trials": self.init_trials,
            "drop_invalid": self.drop_invalid,
        }


def find_invalid_rows(x: np.ndarray, chunk_size: int = 65536) -> np.ndarray:
    """Indices (int64) of rows holding NaN or ±inf, streamed over a memmap."""
    bad = [
        start + np.flatnonzero(~np.isfinite(x[start : start + chunk_size]).all(axis=1))
        for start in range(0, len(x), chunk_size)
    ]
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_keys(keys: Sequence[str]) -> None:
    """Raise ``HierarchyError`` naming duplicated keys."""
    unique, counts = np.unique(np.asarray(keys, dtype=object).astype(str), return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1]
        raise HierarchyError(
            f"{len(dupes)} duplicate keys in the embeddings, e.g. {list(dupes[:5])}; "
            "each sample needs a unique key: rebuild the shards or the embeddings"
        )


def build_hierarchy(
    embeddings: np.ndarray,
    keys: Sequence[str],
    out_dir: str | Path,
    config: HierarchyConfig,
    rows: np.ndarray | None = None,
    overwrite: bool = False,
) -> Hierarchy:
    """Build (or resume) the hierarchy of ``embeddings`` into ``out_dir``.

    Args:
        embeddings: (N, D) rows, e.g. a float16 memmap; read in chunks.
        keys: N sample keys (checked for duplicates).
        out_dir: the hierarchy folder (see the module docstring for its layout).
        config: levels and k-means options; ``levels="auto"`` is resolved against the rows
            clustered (``rows`` less dropped NaN/inf rows), and the resolved levels are saved.
            An unresolved ``spherical=None`` (see ``for_embedder``) clusters Euclidean.
        rows: sorted embedding rows to cluster (e.g. after deduplication); None = all.
        overwrite: delete an existing hierarchy built with another config instead of failing.

    Raises:
        EmbeddingsError: rows that are not (N, D) floats, or not one per key.
        HierarchyError: duplicate keys, NaN/inf rows (without ``drop_invalid``), levels that do
            not fit the data, or an existing hierarchy with another dimension or config.
    """
    out = Path(out_dir)
    if config.spherical is None:  # bare rows, no embedder known: cluster them as they are
        config = replace(config, spherical=False)
    check_rows(embeddings, keys=len(keys))
    check_keys(keys)
    selected = (
        np.arange(len(embeddings), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    )
    invalid = find_invalid_rows(embeddings)
    invalid = invalid[np.isin(invalid, selected)]
    if len(invalid) and not config.drop_invalid:
        raise HierarchyError(
            f"{len(invalid)} embedding rows hold NaN or inf, e.g. keys "
            f"{[keys[i] for i in invalid[:5]]}; fix the embedder or pass drop_invalid=True"
        )
    selected = np.setdiff1d(selected, invalid)
    levels = resolve_levels(config.levels, len(selected))
    auto = levels != config.levels
    if auto:  # "auto": the resolved levels are what config.json records
        log.info("levels: auto on %d rows → %s", len(selected), levels_value(levels))
        config = replace(config, levels=levels)
    check_levels(levels, len(selected))
    identity = {
        **config.identity(),
        "dim": int(embeddings.shape[1]),
        "n_points": len(selected),
        "data_sha256": data_fingerprint(embeddings, selected),
    }
    comm = RankComm()
    if comm.rank == 0:
        _prepare(out, identity, overwrite)
        save_npy(out / "rows.npy", selected)
    comm.barrier()
    if len(invalid):
        log.warning("dropped %d NaN/inf embedding rows", len(invalid))
    data: Rows = (
        embeddings if rows is None and not len(invalid) else RowSubset(embeddings, selected)
    )
    stats: list[dict[str, Any]] = []
    for index, level in enumerate(levels):
        # Level 0 reads all N rows: each rank takes a consecutive slice. Upper levels cluster
        # centroids (a few thousand rows): every rank computes them alike, rank 0 writes.
        level_comm = comm if index == 0 else RankComm(enabled=False)
        stats.append(
            _build_level(
                data, out / f"level_{index:02d}", index, level, config, level_comm, comm.rank == 0
            )
        )
        comm.barrier()
        data = load_npy(out / f"level_{index:02d}" / "centroids.npy")
    if comm.rank == 0:
        summary = {"dropped_invalid": len(invalid), "auto_levels": auto, "levels": stats}
        save_json(out / "summary.json", summary)
    comm.barrier()
    return Hierarchy(root=out, config=identity, stats=stats)


def data_fingerprint(embeddings: np.ndarray, rows: np.ndarray, chunk_size: int = 65536) -> str:
    """sha256 of the embedding bytes and the selected rows (a resumed build must see the same
    data)."""
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    for start in range(0, len(embeddings), chunk_size):
        digest.update(np.ascontiguousarray(embeddings[start : start + chunk_size]).tobytes())
    return digest.hexdigest()


def _prepare(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` or check that an existing hierarchy there can be resumed."""
    path = out / "config.json"
    if path.is_file():
        existing = load_json(path)
        if existing != identity:
            if existing.get("dim") != identity["dim"] and not overwrite:
                raise HierarchyError(
                    f"hierarchy at {out} has embedding dimension {existing.get('dim')}, these "
                    f"embeddings have {identity['dim']}; use another folder or overwrite=True"
                )
            if not overwrite:
                changed = sorted(k for k in identity if existing.get(k) != identity[k])
                raise HierarchyError(
                    f"hierarchy at {out} was built with other settings or data "
                    f"({', '.join(changed)}); use another folder or overwrite=True"
                )
            shutil.rmtree(out)
    save_json(path, identity)


def _step_seed(config: HierarchyConfig, level: int, step: int) -> int:
    return config.seed + 1000 * level + step


def _build_level(
    full: Rows,
    folder: Path,
    index: int,
    level: Level,
    config: HierarchyConfig,
    comm: RankComm,
    write: bool,
) -> dict[str, Any]:
    """Run or resume one level; returns its stats (also written to ``stats.json`` when ``write``).

    With an active ``comm`` each rank assigns its consecutive slice of ``full``: k-means sums are
    all-reduced, the resampling pool is the r closest rows per cluster over every rank's
    candidates, and the pool's k-means runs alike on every rank (same rows, same seed).
    """
    if (folder / "stats.json").is_file():
        log.info("level %d already complete in %s", index, folder)
        return load_json(folder / "stats.json")
    started = time.perf_counter()
    offset, data = _rank_slice(full, comm)
    steps = folder / "steps"
    done = sorted(steps.glob("step_*.npy")) if steps.is_dir() else []
    kmeans_config = KMeansConfig(
        n_clusters=level.n_clusters,
        max_iter=config.max_iter,
        init_trials=config.init_trials,
        spherical=bool(config.spherical),  # resolved by build_hierarchy
        chunk_size=config.chunk_size,
        device=config.device,
        progress=config.progress,
    )
    history: list[dict[str, Any]] = []
    if done:
        first = int(done[-1].stem.split("_")[1]) + 1
        centroids = load_npy(done[-1])
        labels, distances = assign(data, centroids, kmeans_config.assignment())
        log.info("level %d: resuming after step %d", index, first - 1)
    else:
        first = 1
        result = kmeans(
            data, replace(kmeans_config, seed=_step_seed(config, index, 0)), distributed=comm.active
        )
        centroids, labels, distances = result.centroids, result.labels, result.distances
        if write:
            save_npy(steps / "step_000.npy", centroids)
        history.append(
            {
                "step": 0,
                "inertia": result.inertia,
                "n_iter": result.n_iter,
                "reseeded": result.reseeded,
            }
        )
    for step in range(first, level.n_resampling_steps + 1):
        pool = _global_pool(labels, distances, offset, level, comm)
        seeded = replace(kmeans_config, seed=_step_seed(config, index, step))
        result = kmeans(np.asarray(full[pool], dtype=np.float32), seeded, distributed=False)
        centroids = result.centroids
        labels, distances = assign(data, centroids, kmeans_config.assignment())
        if write:
            save_npy(steps / f"step_{step:03d}.npy", centroids)
        inertia = float(comm.sum(np.array([distances.sum(dtype=np.float64)]))[0])
        history.append(
            {
                "step": step,
                "pool": len(pool),
                "pool_inertia": result.inertia,
                "inertia": inertia,
                "n_iter": result.n_iter,
                "reseeded": result.reseeded,
            }
        )
    labels, distances = comm.gather_rows(labels), comm.gather_rows(distances)
    offsets, members = to_csr(labels, distances, level.n_clusters)
    sizes = np.diff(offsets)
    stats = {
        "level": index,
        **asdict(level),
        "n_input": len(labels),
        "inertia": float(distances.sum(dtype=np.float64)),
        "mean_distance": float(distances.mean(dtype=np.float64)),
        "empty_clusters": int((sizes == 0).sum()),
        "size_entropy": normalised_entropy(sizes),
        "sizes": size_quantiles(sizes),
        "steps": history,
        "seconds": time.perf_counter() - started,
        "ranks": comm.world,
    }
    warning = small_clusters_message(index, level, stats["sizes"]["p50"], len(labels))
    if warning and write:
        log.warning(warning)
    if not write:
        return stats
    save_npy(folder / "centroids.npy", centroids)
    save_npy(folder / "assignments.npy", labels.astype(np.int32))
    save_npy(folder / "distances.npy", distances.astype(np.float32))
    save_npy(folder / "clusters_offsets.npy", offsets)
    save_npy(folder / "clusters_members.npy", members)
    save_json(folder / "stats.json", stats)
    return stats


def _rank_slice(full: Rows, comm: RankComm) -> tuple[int, Rows]:
    """This rank's first row and its consecutive slice of ``full`` (all of it without ``comm``)."""
    if not comm.active:
        return 0, full
    local = np.array_split(np.arange(len(full), dtype=np.int64), comm.world)[comm.rank]
    return int(local[0]) if len(local) else len(full), RowSubset(full, local)


def _global_pool(
    labels: np.ndarray, distances: np.ndarray, offset: int, level: Level, comm: RankComm
) -> np.ndarray:
    """Sorted rows of ``full`` nearest to each centroid, over all ranks.

    Each rank's r nearest per cluster contain its share of the global r nearest, so the global
    choice among the gathered candidates equals the single-process choice (ties by lower row).
    """
    local = closest_per_cluster(labels, distances, level.n_clusters, level.sample_size)
    if not comm.active:
        return local
    rows = comm.gather_rows(local + offset)
    chosen = closest_per_cluster(
        comm.gather_rows(labels[local]),
        comm.gather_rows(distances[local]),
        level.n_clusters,
        level.sample_size,
    )
    return np.sort(rows[chosen])


def closest_per_cluster(
    labels: np.ndarray, distances: np.ndarray, n_clusters: int, r: int
) -> np.ndarray:
    """Sorted indices of the ``r`` points nearest to each cluster's centroid (all if fewer)."""
    offsets, members = to_csr(labels, distances, n_clusters)
    rank = np.arange(len(members)) - np.repeat(offsets[:-1], np.diff(offsets))
    return np.sort(members[rank < r])


def to_csr(
    labels: np.ndarray, distances: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters as CSR: offsets (K+1,) int64 and members (n,) int64 sorted by (cluster, distance).

    Ties in distance keep the lower index first, so the layout is deterministic.
    """
    members = np.lexsort((np.arange(len(labels)), distances, labels)).astype(np.int64)
    counts = np.bincount(labels, minlength=n_clusters)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, members
