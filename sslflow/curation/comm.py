"""Collectives of distributed k-means over torch.distributed, on the backend's device.

Under NCCL (ranks on GPUs) every collective runs on a CUDA tensor of the rank's current device;
under gloo on CPU tensors. Callers pass and receive numpy arrays: what crosses ranks is small
(K×D sums, counts, a few scalars), the row data never does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


class RankComm:
    """Collectives when a process group is up (and ``enabled``), else the identity."""

    def __init__(self, enabled: bool = True) -> None:
        self.active = enabled and dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        nccl = self.active and dist.get_backend() == "nccl"
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        )

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A copy on the collective's device: the caller's array is never written in place."""
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, copy=True)

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Concatenate arrays of any length along axis 0, in rank order, on every rank."""
        if not self.active:
            return array
        parts: list[np.ndarray | None] = [None] * self.world
        dist.all_gather_object(parts, np.ascontiguousarray(array))
        return np.concatenate([p for p in parts if p is not None])

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks."""
        if not self.active:
            return array
        tensor = self._tensor(array)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Concatenate equally shaped arrays of all ranks along axis 0, in rank order."""
        if not self.active:
            return array
        tensor = self._tensor(array)
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts).cpu().numpy()

    def row_offset(self, n_local: int) -> tuple[int, int]:
        """(first global row of this rank, global N): ranks hold consecutive row slices in rank
        order."""
        sizes = self.gather(np.array([n_local], dtype=np.int64))
        return int(sizes[: self.rank].sum()), int(sizes.sum())


def process_group_backend(local_ranks: int) -> str:
    """``"nccl"`` when each of this node's ``local_ranks`` can have a GPU of its own (NCCL
    refuses two ranks on one device), else gloo."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "nccl" if 0 < local_ranks <= gpus else "gloo"
