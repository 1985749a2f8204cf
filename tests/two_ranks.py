"""Two ranks on one machine running the curation collectives: gloo on the CPU, NCCL on GPUs.

A rank started by ``torch.multiprocessing.spawn`` imports the module of the function it runs;
this one imports only numpy, torch and the curation code, so a rank starts in seconds rather
than the ~15 s of a test module that also imports scikit-learn and faiss.

    mp.spawn(collectives_worker, args=(2, "gloo", free_port(), str(tmp_path)), nprocs=2)
    found = load_rank_results(tmp_path, 2)
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sslflow.curation.comm import RankComm
from sslflow.curation.kmeans import KMeansConfig, kmeans

KMEANS = KMeansConfig(n_clusters=8, seed=5, init_sample=500, chunk_size=128)
LOCAL_ROWS = (5, 2)  # rows each rank says it holds, for row_offset


def rank_values(rank: int) -> np.ndarray:
    """The (3, 4) float64 array rank ``rank`` all-reduces: different on every rank, and sums
    that float64 holds exactly."""
    return np.arange(12, dtype=np.float64).reshape(3, 4) * (rank + 1) + 0.25 * rank


def cluster_data(n: int = 1200, centers: int = 8, dim: int = 4, seed: int = 2) -> np.ndarray:
    """Well separated Gaussian blobs (float32): the same on every rank."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=10.0, size=(centers, dim))
    x = means[rng.integers(centers, size=n)] + rng.normal(size=(n, dim))
    return x.astype(np.float32)


def collectives_worker(rank: int, world: int, backend: str, port: int, out: str) -> None:
    """One rank: every RankComm collective on rank-dependent inputs, then k-means on this
    rank's consecutive slice of :func:`cluster_data`; results go to ``<out>/rank<rank>.pkl``."""
    if backend == "nccl":
        torch.cuda.set_device(rank)  # NCCL needs a GPU of its own per rank
    torch.set_num_threads(1)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        comm = RankComm()
        local = rank_values(rank)
        found: dict[str, Any] = {
            "device": str(comm.device),
            "rank": comm.rank,
            "world": comm.world,
            "sum": comm.sum(local),
            "sum_int64": comm.sum(np.array([rank + 1, 10 * (rank + 1)], dtype=np.int64)),
            "input_unchanged": np.array_equal(local, rank_values(rank)),
            "gather": comm.gather(np.full((2, 3), rank, dtype=np.float32)),
            "gather_rows": comm.gather_rows(np.full((rank + 1, 2), rank, dtype=np.int64)),
            "row_offset": comm.row_offset(LOCAL_ROWS[rank]),
        }
        x = cluster_data()
        rows = np.array_split(np.arange(len(x)), world)[rank]
        # gloo: the CPU path throughout; NCCL: assignment on this rank's GPU too
        result = kmeans(x[rows], dataclasses.replace(KMEANS, device=comm.device.type))
        found["centroids"], found["labels"] = result.centroids, result.labels
        (Path(out) / f"rank{rank}.pkl").write_bytes(pickle.dumps(found))
    finally:
        dist.destroy_process_group()


def load_rank_results(out: Path, world: int) -> list[dict[str, Any]]:
    """What :func:`collectives_worker` wrote, in rank order."""
    return [pickle.loads((out / f"rank{rank}.pkl").read_bytes()) for rank in range(world)]
