"""k-means: seeded determinism, quality against scikit-learn, empty clusters, distributed
equality."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from conftest import free_port
from sslflow.curation.assignment import assign
from sslflow.curation.kmeans import KMeansConfig, init_centroids, kmeans


def blobs(n: int = 3000, centers: int = 12, dim: int = 8, seed: int = 0) -> np.ndarray:
    x, _ = make_blobs(n, n_features=dim, centers=centers, cluster_std=1.5, random_state=seed)
    return x.astype(np.float32)


def test_kmeans_plus_plus_and_lloyd_are_seeded() -> None:
    x = blobs()
    config = KMeansConfig(n_clusters=12, seed=3, max_iter=5)
    np.testing.assert_array_equal(init_centroids(x, config), init_centroids(x, config))
    first, second = kmeans(x, config), kmeans(x, config)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.labels, second.labels)
    other = kmeans(x, KMeansConfig(n_clusters=12, seed=4, max_iter=5))
    assert not np.array_equal(first.centroids, other.centroids)


def test_inertia_within_one_percent_of_scikit_learn() -> None:
    x = blobs(4000, centers=16)
    ours = kmeans(x, KMeansConfig(n_clusters=16, seed=0))
    reference = KMeans(16, n_init=10, random_state=0).fit(x)
    assert ours.inertia <= 1.01 * reference.inertia_
    # labels and distances match the returned centroids (a converged or final assignment pass)
    labels, distances = assign(x, ours.centroids)
    np.testing.assert_array_equal(labels, ours.labels)
    assert ours.inertia == pytest.approx(float(distances.sum(dtype=np.float64)), rel=1e-5)


def test_float16_memmap_in_chunks_matches_in_memory(tmp_path: Path) -> None:
    x = blobs(2000).astype(np.float16)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    config = KMeansConfig(n_clusters=10, seed=1, chunk_size=256)
    streamed = kmeans(mapped, config)
    whole = kmeans(x.astype(np.float32), KMeansConfig(n_clusters=10, seed=1, chunk_size=10_000))
    np.testing.assert_allclose(streamed.centroids, whole.centroids, atol=1e-5)


def test_spherical_centroids_are_unit_vectors() -> None:
    result = kmeans(blobs(1000), KMeansConfig(n_clusters=6, spherical=True))
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-5)
    assert result.distances.max() <= 4.0 + 1e-5  # squared distance between unit vectors


def test_empty_cluster_is_reseeded_with_the_farthest_point() -> None:
    # two tight groups plus one outlier; a third centroid placed far away starts empty
    x = np.array([[0, 0], [0.1, 0], [10, 10], [10.1, 10], [50, 0]], dtype=np.float32)
    init = np.array([[0, 0], [10, 10], [-100, -100]], dtype=np.float32)
    result = kmeans(x, KMeansConfig(n_clusters=3, max_iter=10), init=init)
    assert result.reseeded == 1
    np.testing.assert_allclose(result.centroids[2], [50, 0])  # the farthest point took it
    assert (result.counts > 0).all()


def test_too_few_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least n_clusters=5"):
        kmeans(np.zeros((3, 2), np.float32), KMeansConfig(n_clusters=5))


def _distributed_worker(rank: int, world: int, port: int, x: np.ndarray, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = np.array_split(np.arange(len(x)), world)[rank]
        result = kmeans(
            x[rows], KMeansConfig(n_clusters=8, seed=5, init_sample=500, chunk_size=128)
        )
        np.save(f"{out}/centroids_{rank}.npy", result.centroids)
        np.save(f"{out}/labels_{rank}.npy", result.labels)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~30 s: each spawned process imports torch, faiss and scikit-learn
def test_two_process_gloo_matches_one_process(tmp_path: Path) -> None:
    x = blobs(1200, centers=8, dim=4, seed=2)
    mp.spawn(_distributed_worker, args=(2, free_port(), x, str(tmp_path)), nprocs=2, join=True)
    single = kmeans(x, KMeansConfig(n_clusters=8, seed=5, init_sample=500, chunk_size=128))
    for rank in range(2):
        np.testing.assert_allclose(
            np.load(tmp_path / f"centroids_{rank}.npy"), single.centroids, atol=1e-5
        )
    labels = np.concatenate([np.load(tmp_path / f"labels_{rank}.npy") for rank in range(2)])
    np.testing.assert_array_equal(labels, single.labels)
