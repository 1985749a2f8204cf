"""Losses that gather across ranks: two gloo processes equal one process on the whole batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from conftest import free_port
from sslflow.ssl.methods import build_method

# Methods whose loss gathers over ranks (NT-Xent negatives, Sinkhorn codes, AMCL negatives).
CASES = {
    "simclr": {},
    "moco": {"variant": "v3"},
    "swav": {"n_local": 1, "n_prototypes": [16, 8]},
    "amcl": {"base": "simclr", "n_heads": 2},
}
BATCH = 16


def _method(name: str) -> nn.Module:
    """The same method on every rank: seeded, in eval mode so BatchNorm uses no batch stats."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    method = build_method(name, backbone, 24, hidden_dim=32, output_dim=16, **CASES[name])
    return method.eval()


def _views(name: str) -> list[torch.Tensor]:
    """Fixed random views of BATCH images (the test is about the reduction, not the data)."""
    generator = torch.Generator().manual_seed(1)
    sizes = _method(name).views().crop_sizes(12)
    return [torch.randn(BATCH, 1, size, size, generator=generator) for size in sizes]


def _losses_one_process() -> dict[str, float]:
    with torch.no_grad():
        return {
            name: float(_method(name).training_step_loss(_views(name), 0, 0)[0]) for name in CASES
        }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    share = BATCH // world
    losses = {}
    with torch.no_grad():
        for name in CASES:
            views = [view[rank * share : (rank + 1) * share] for view in _views(name)]
            loss = _method(name).training_step_loss(views, 0, 0)[0]
            torch.distributed.all_reduce(loss)
            losses[name] = float(loss) / world
    if rank == 0:
        torch.save(losses, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~30-60 s on a loaded machine: each spawned process imports torch and lightly
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    out = tmp_path / "losses.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    expected = _losses_one_process()
    for name, loss in expected.items():
        assert distributed[name] == pytest.approx(loss, rel=1e-4), name
