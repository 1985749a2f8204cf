"""Queues of past embeddings that survive a checkpoint: lightly's memory bank, made persistent.

lightly's ``MemoryBankModule`` registers its bank and pointer with ``persistent=False``, so
they are missing from ``state_dict()`` and a resumed run would restart from a random queue.
:class:`PersistentMemoryBank` re-registers both as persistent buffers and adds a fill
counter, which SwAV needs to know when its queue holds only real embeddings.
"""

from __future__ import annotations

from typing import cast

import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn


class PersistentMemoryBank(MemoryBankModule):
    """A FIFO queue of ``size[0]`` vectors of width ``size[1]`` kept in ``state_dict()``.

    Args:
        size: (number of entries, feature width). Entries start as random unit vectors
            (MoCo's initialisation); :attr:`n_filled` counts real entries written since.
        gather_distributed: Enqueue the batches of all ranks (MoCo) rather than only this
            rank's (SwAV keeps one queue per rank).
        feature_dim_first: Return the bank as (width, entries) instead of (entries, width).
    """

    def __init__(
        self,
        size: tuple[int, int],
        gather_distributed: bool = False,
        feature_dim_first: bool = False,
    ) -> None:
        if len(size) != 2 or size[0] < 1 or size[1] < 1:
            raise ValueError(f"A memory bank needs size=(entries >= 1, width >= 1), got {size}.")
        super().__init__(
            size=size, gather_distributed=gather_distributed, feature_dim_first=feature_dim_first
        )
        # Re-registering an existing buffer name with persistent=True puts it in state_dict().
        self.register_buffer("bank", self.bank, persistent=True)
        self.register_buffer("bank_ptr", self.bank_ptr, persistent=True)
        self.n_filled: torch.Tensor
        self.register_buffer("n_filled", torch.zeros((), dtype=torch.long))

    @property
    def capacity(self) -> int:
        """Number of entries the queue holds."""
        return int(self.size[0])

    @property
    def is_full(self) -> bool:
        """True once every entry has been written with a real embedding."""
        return int(self.n_filled) >= self.capacity

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch: torch.Tensor) -> None:
        """Overwrite the oldest entries with ``batch`` (B, width) and count the written ones."""
        ptr = int(self.bank_ptr)
        super()._dequeue_and_enqueue(batch)
        new_ptr = int(self.bank_ptr)
        written = self.capacity - ptr if new_ptr == 0 else new_ptr - ptr
        self.n_filled.copy_(torch.clamp(self.n_filled + written, max=self.capacity))

    @torch.no_grad()
    def push(self, batch: torch.Tensor) -> None:
        """Enqueue ``batch`` (B, width), detached and cast to the bank's dtype."""
        self._dequeue_and_enqueue(batch.detach().to(self.bank.dtype))

    def entries(self) -> torch.Tensor:
        """A detached copy of the queue, (entries, width) (or transposed, see the constructor)."""
        bank = self.bank.clone().detach()
        return bank.transpose(0, 1) if self.feature_dim_first else bank


def banks(modules: nn.ModuleList) -> list[PersistentMemoryBank]:
    """The memory banks held in ``modules``, typed (iterating a ModuleList yields ``nn.Module``)."""
    return [cast(PersistentMemoryBank, module) for module in modules]
