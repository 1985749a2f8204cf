"""pretrained=True without a weights file: cached hub weights load offline, an unreachable hub
fails in seconds instead of a minute of retries."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from sslflow.models import create_backbone
from sslflow.models.hub_weights import cached_weights, hub_reachable


@pytest.fixture()
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and a hub endpoint on a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return cache


def _cache_weights(cache: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` laid out as huggingface_hub caches ``name``'s default weights."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_cached_hub_weights_load_without_the_network(offline_hub: Path) -> None:
    torch.manual_seed(2)
    source = timm.create_model("resnet10t", num_classes=0, in_chans=3)
    path = _cache_weights(offline_hub, "resnet10t", source.state_dict())
    assert cached_weights("resnet10t") == path
    module, _ = create_backbone("resnet10t", in_chans=3, small_stem=False, pretrained=True)
    key = "layer4.0.conv1.weight"
    assert torch.equal(module.state_dict()[key], source.state_dict()[key])


def test_uncached_weights_with_the_hub_unreachable_fail_at_once(offline_hub: Path) -> None:
    assert cached_weights("resnet10t") is None and not hub_reachable()
    started = time.perf_counter()
    with pytest.raises(ValueError, match="cannot be reached.*embeddings.weights"):
        create_backbone("resnet10t", in_chans=3, small_stem=False, pretrained=True)
    assert time.perf_counter() - started < 10


def test_offline_setting_means_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
