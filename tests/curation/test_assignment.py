"""Assignment kernels: the torch (GPU) path equals faiss on the CPU fallback, deterministic
float64 sums, device resolution, and the collectives of two ranks (gloo; NCCL on two GPUs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.datasets import make_blobs

import two_ranks
from conftest import free_port
from sslflow.curation import assignment
from sslflow.curation.assignment import AssignConfig, assignment_pass
from sslflow.curation.comm import process_group_backend
from sslflow.curation.kmeans import KMeansConfig, kmeans
from sslflow.devices import resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def embeddings(n: int = 3000, dim: int = 32, seed: int = 0) -> np.ndarray:
    x, _ = make_blobs(n, n_features=dim, centers=20, cluster_std=2.0, random_state=seed)
    return x.astype(np.float32)


def reference_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, labels, x.astype(np.float64))
    return sums


@pytest.mark.parametrize("spherical", [False, True])
def test_torch_kernel_on_cpu_equals_faiss(tmp_path: Path, spherical: bool) -> None:
    x = embeddings()
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float16))  # a float16 memmap, as the embeddings asset writes
    rows = np.load(path, mmap_mode="r")
    centroids = x[np.random.default_rng(0).choice(len(x), 50, replace=False)]
    if spherical:
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    passes = {
        kernel: assignment_pass(rows, centroids, AssignConfig(500, spherical, "cpu", kernel))
        for kernel in ("faiss", "torch")
    }
    np.testing.assert_array_equal(passes["torch"].labels, passes["faiss"].labels)
    np.testing.assert_allclose(
        passes["torch"].distances, passes["faiss"].distances, rtol=1e-4, atol=1e-3
    )


def test_torch_kernel_in_blocks_of_rows_gives_the_same_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = embeddings(1000, dim=16)
    centroids = x[:50].copy()
    whole = assignment_pass(x, centroids, AssignConfig(400, device="cpu", kernel="torch"))
    monkeypatch.setattr(assignment, "SCORES_BYTES", 4 * 50 * 7)  # blocks of 7 rows
    blocks = assignment_pass(x, centroids, AssignConfig(400, device="cpu", kernel="torch"))
    np.testing.assert_array_equal(blocks.labels, whole.labels)
    # float32 rounding of ‖x‖² ≈ 500 differs between GEMM blockings by a few 1e-5
    np.testing.assert_allclose(blocks.distances, whole.distances, rtol=1e-5, atol=1e-3)


def test_sums_follow_the_rows_that_change_label() -> None:
    x = embeddings(2000, dim=8)
    rng = np.random.default_rng(1)
    config = AssignConfig(chunk_size=300, device="cpu")
    sums = np.zeros((30, 8), np.float64)
    first = assignment_pass(x, x[rng.choice(2000, 30, replace=False)], config, sums)
    assert first.changed == 2000  # every row enters its first cluster
    np.testing.assert_allclose(sums, reference_sums(x, first.labels, 30), rtol=0, atol=1e-9)
    second = assignment_pass(x, x[rng.choice(2000, 30, replace=False)], config, sums, first.labels)
    assert second.changed == int(np.count_nonzero(second.labels != first.labels)) > 0
    np.testing.assert_allclose(sums, reference_sums(x, second.labels, 30), rtol=0, atol=1e-9)


def test_kmeans_with_the_torch_kernel_matches_faiss() -> None:
    x = embeddings(2000, dim=16, seed=3)
    configs = {
        k: KMeansConfig(n_clusters=20, seed=2, device="cpu", kernel=k) for k in ("faiss", "torch")
    }
    faiss_run, torch_run = (kmeans(x, config) for config in configs.values())
    np.testing.assert_array_equal(torch_run.labels, faiss_run.labels)
    np.testing.assert_allclose(torch_run.centroids, faiss_run.centroids, atol=1e-5)
    assert torch_run.n_iter == faiss_run.n_iter


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert process_group_backend(2) == "gloo"


@needs_cuda
@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_gpu_assignment_equals_the_cpu_path(kernel: str) -> None:
    x = embeddings(20_000, dim=64)
    centroids = x[:200].copy()
    cpu = assignment_pass(x, centroids, AssignConfig(4096, False, "cpu"))
    config = AssignConfig(4096, False, "cuda", kernel)  # type: ignore[arg-type]
    gpu = assignment_pass(x, centroids, config)
    assert np.mean(gpu.labels == cpu.labels) > 0.999  # ties and float32 rounding aside
    np.testing.assert_allclose(gpu.distances, cpu.distances, rtol=1e-3, atol=1e-2)
    on_gpu = kmeans(x, KMeansConfig(n_clusters=50, seed=0, device="cuda", kernel=kernel))  # type: ignore[arg-type]
    on_cpu = kmeans(x, KMeansConfig(n_clusters=50, seed=0, device="cpu"))
    assert on_gpu.inertia == pytest.approx(on_cpu.inertia, rel=1e-3)


needs_two_gpus = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL: one GPU per rank)"
)


@pytest.mark.parametrize("backend", ["gloo", pytest.param("nccl", marks=needs_two_gpus)])
def test_two_ranks_sum_gather_and_cluster_together(backend: str, tmp_path: Path) -> None:
    """Two processes, each on its own device under NCCL: every collective combines both ranks
    (with one rank each would be the identity) and k-means over both halves equals k-means of
    the whole in one process."""
    args = (2, backend, free_port(), str(tmp_path))
    mp.spawn(two_ranks.collectives_worker, args=args, nprocs=2, join=True)
    ranks = two_ranks.load_rank_results(tmp_path, 2)
    x = two_ranks.cluster_data()
    alone = kmeans(x, dataclasses.replace(two_ranks.KMEANS, device="cpu"))
    for rank, found in enumerate(ranks):
        assert found["device"] == (f"cuda:{rank}" if backend == "nccl" else "cpu")
        assert (found["rank"], found["world"]) == (rank, 2)
        expected_sum = two_ranks.rank_values(0) + two_ranks.rank_values(1)
        np.testing.assert_array_equal(found["sum"], expected_sum)
        assert found["sum"].dtype == np.float64 and found["input_unchanged"]
        np.testing.assert_array_equal(found["sum_int64"], np.array([3, 30]))
        assert found["sum_int64"].dtype == np.int64
        np.testing.assert_array_equal(found["gather"], np.repeat([0.0, 1.0], 6).reshape(4, 3))
        np.testing.assert_array_equal(found["gather_rows"], np.array([[0, 0], [1, 1], [1, 1]]))
        # LOCAL_ROWS = (5, 2): rank 0 starts at row 0, rank 1 at row 5, of 7
        assert found["row_offset"] == ((0, 7) if rank == 0 else (5, 7))
        np.testing.assert_allclose(found["centroids"], alone.centroids, atol=1e-4)
    labels = np.concatenate([found["labels"] for found in ranks])
    np.testing.assert_array_equal(labels, alone.labels)
