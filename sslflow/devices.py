"""Where tensor work runs: one rule for every stage (CUDA when available, else the CPU).

Embedding, probe features, the kNN bank and k-means all resolve their device here, so a
machine with a GPU uses it everywhere and a CPU-only machine runs the same code on the CPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def compute_device() -> torch.device:
    """CUDA (the current device) when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → :func:`compute_device`; anything else (``"cpu"``, ``"cuda:1"``) as given.

    Raises:
        ValueError: a CUDA device is asked for on a machine without one.
    """
    if name == "auto":
        return compute_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use 'auto'")
    return device


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a CUDA device that supports it; otherwise float32 as the weights are."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
