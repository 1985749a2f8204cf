"""Seeded k-means streamed over a (memory-mapped) embedding matrix, optionally distributed.

Why not ``faiss.Kmeans`` or scikit-learn's ``KMeans``: both need the whole matrix in RAM as
float32 (twice the float16 memmap), accumulate centroid sums in float32, re-seed empty clusters
by an undocumented rule and cannot all-reduce over ``torch.distributed``. The Lloyd loop here is
a few dozen lines around library kernels: scikit-learn's ``kmeans_plusplus`` for the seeding
and :mod:`sslflow.curation.assignment` (faiss on the CPU, faiss-gpu or torch on a GPU) for the
assignment; collectives run through :class:`sslflow.curation.comm.RankComm` (NCCL on GPUs).

Empty clusters: after an assignment pass, a cluster that received no point is re-seeded with
the point farthest from its own centroid (the largest contributor to the inertia); several
empty clusters take the next farthest points, ties broken by the lower global row index. The
next pass then assigns points to it normally. The count of re-seeds is returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import kmeans_plusplus
from tqdm.auto import tqdm

from sslflow.curation.assignment import AssignConfig, Kernel, assignment_pass
from sslflow.curation.comm import RankComm
from sslflow.curation.rows import Rows, RowSubset, check_rows, read_chunk, unit_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansConfig:
    """Options of one k-means run.

    Attributes:
        n_clusters: K.
        max_iter: Lloyd iterations (assignment + update); stops earlier when an assignment pass
            changes no label.
        seed: seeds the k-means++ sample and the k-means++ draws.
        spherical: L2-normalise rows and centroids (cosine k-means); distances stay squared L2
            between unit vectors, i.e. 2 - 2 cos.
        init_sample: rows drawn for k-means++ (it costs K × sample × D); None = all rows up
            to max(40 K, 10,000).
        init_trials: candidates tried per k-means++ draw; None = scikit-learn's greedy default
            (2 + log K), 1 = the original k-means++ (about (2 + log K)× cheaper).
        chunk_size: rows per streamed chunk; memory is O(chunk_size × K + N).
        device: where assignment runs: "auto" (CUDA when available), "cpu", "cuda[:N]".
        kernel: assignment kernel, see ``sslflow.curation.assignment.AssignConfig``.
        progress: show a tqdm bar over iterations.
    """

    n_clusters: int
    max_iter: int = 50
    seed: int = 0
    spherical: bool = False
    init_sample: int | None = None
    init_trials: int | None = None
    chunk_size: int = 16384
    device: str = "auto"
    kernel: Kernel = "auto"
    progress: bool = False

    def assignment(self) -> AssignConfig:
        return AssignConfig(self.chunk_size, self.spherical, self.device, self.kernel)


@dataclass
class KMeansResult:
    """Centroids (K, D) float32; labels and squared distances of this rank's rows (n,)."""

    centroids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    counts: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    reseeded: int


def init_centroids(x: Rows, config: KMeansConfig, comm: RankComm | None = None) -> np.ndarray:
    """k-means++ centroids (K, D) float32 from a seeded sample of rows.

    The sample is drawn by global row index, so every rank (each holding a row slice) builds the
    same sample by summing its own rows into a zero buffer, and gets the same centroids as a
    single process would.
    """
    comm = comm or RankComm()
    offset, total = comm.row_offset(len(x))
    k = config.n_clusters
    size = config.init_sample or default_init_sample(k)
    rng = np.random.default_rng(config.seed)
    picked = (
        np.sort(rng.choice(total, size=size, replace=False)) if size < total else np.arange(total)
    )
    mine = picked[(picked >= offset) & (picked < offset + len(x))]
    sample = np.zeros((len(picked), x.shape[1]), dtype=np.float64)
    if len(mine):
        rows = np.asarray(x[mine - offset], dtype=np.float32)
        sample[np.searchsorted(picked, mine)] = unit_rows(rows) if config.spherical else rows
    sample = comm.sum(sample).astype(np.float32)
    centroids, _ = kmeans_plusplus(
        sample, k, random_state=config.seed, n_local_trials=config.init_trials
    )
    return _normalise(centroids.astype(np.float32), config.spherical)


def _normalise(centroids: np.ndarray, spherical: bool) -> np.ndarray:
    centroids = np.array(centroids, dtype=np.float32)
    return unit_rows(centroids) if spherical else centroids


def _farthest_rows(
    x: Rows, distances: np.ndarray, count: int, spherical: bool, comm: RankComm
) -> np.ndarray:
    """The ``count`` rows (count, D) farthest from their centroid over all ranks.

    Ties are broken by the lower global index so that 1 and P processes pick the same rows.
    """
    offset, _ = comm.row_offset(len(x))
    local = min(count, len(distances))
    top = (
        np.sort(np.argpartition(-distances, local - 1)[:local]) if local else np.zeros(0, np.int64)
    )
    key = np.full(count, -np.inf, dtype=np.float64)
    index = np.full(count, -1, dtype=np.int64)
    rows = np.zeros((count, x.shape[1]), dtype=np.float32)
    key[:local] = distances[top]
    index[:local] = top + offset
    if local:
        rows[:local] = read_chunk(RowSubset(x, top), 0, local, spherical)
    keys, indices, candidates = comm.gather(key), comm.gather(index), comm.gather(rows)
    order = np.lexsort((indices, -keys))[:count]
    return candidates[order]


def kmeans(
    x: Rows, config: KMeansConfig, init: np.ndarray | None = None, distributed: bool = True
) -> KMeansResult:
    """Lloyd's k-means on (N, D) rows, streamed in chunks, all-reduced across ranks if any.

    Args:
        x: this rank's (n, D) rows (the whole matrix without a process group). Ranks must hold
            consecutive slices in rank order, so results match a single process on the union.
        config: see ``KMeansConfig``.
        init: (K, D) starting centroids; None = seeded k-means++.
        distributed: all-reduce across ranks when a process group is up; False when every rank
            holds the same rows (e.g. a resampling pool) and computes the same result.

    Returns:
        ``KMeansResult``; labels and distances cover this rank's rows and match the returned
        centroids (a final assignment pass runs when ``max_iter`` stops the loop).
    """
    check_rows(x)
    comm = RankComm(distributed)
    _, total = comm.row_offset(len(x))
    if total < config.n_clusters:
        raise ValueError(f"k-means needs at least n_clusters={config.n_clusters} rows, got {total}")
    centroids = (
        init_centroids(x, config, comm)
        if init is None
        else _normalise(np.asarray(init), config.spherical)
    )
    previous: np.ndarray | None = None
    sums = np.zeros(centroids.shape, np.float64)  # this rank's, moved row by row as labels change
    reseeded, n_iter, converged = 0, 0, False
    bar = tqdm(
        total=config.max_iter, desc=f"k-means K={config.n_clusters}", disable=not config.progress
    )
    for n_iter in range(1, config.max_iter + 1):
        step = assignment_pass(x, centroids, config.assignment(), sums, previous)
        labels, distances = step.labels, step.distances
        changed = int(comm.sum(np.array([step.changed], dtype=np.int64))[0])
        counts = comm.sum(np.bincount(labels, minlength=config.n_clusters).astype(np.int64))
        bar.update(1)
        bar.set_postfix(changed=changed)
        if previous is not None and changed == 0:
            converged = True
            break
        total_sums = comm.sum(sums)
        filled = counts > 0
        updated = centroids.copy()
        updated[filled] = (total_sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):
            updated[empty] = _farthest_rows(x, distances, len(empty), config.spherical, comm)
            reseeded += len(empty)
        centroids = _normalise(updated, config.spherical)
        previous = labels
    else:
        final = assignment_pass(x, centroids, config.assignment())
        labels, distances = final.labels, final.distances
        counts = comm.sum(np.bincount(labels, minlength=config.n_clusters).astype(np.int64))
    bar.close()
    inertia = float(comm.sum(np.array([distances.sum(dtype=np.float64)]))[0])
    if reseeded:
        log.info("k-means K=%d: re-seeded %d empty clusters", config.n_clusters, reseeded)
    return KMeansResult(
        centroids=centroids,
        labels=labels,
        distances=distances,
        counts=counts,
        inertia=inertia,
        n_iter=n_iter,
        converged=converged,
        reseeded=reseeded,
    )


def default_init_sample(n_clusters: int) -> int:
    """The k-means++ sample size used when ``init_sample`` is None (for docs and logs)."""
    return max(40 * n_clusters, 10_000)


__all__ = ["KMeansConfig", "KMeansResult", "default_init_sample", "init_centroids", "kmeans"]
