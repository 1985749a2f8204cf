"""Where a timm model's pretrained weights come from when no weights file is given.

timm downloads them from the Hugging Face hub (or, for older models, a URL into torch's hub
cache). Offline, huggingface_hub retries each request with backoff and fails after about a
minute. sslflow looks in both local caches first and loads a cached file directly, so cached
weights never touch the network; without a cached file it checks in seconds that the hub
answers before letting timm download, and otherwise fails at once saying where to put a file.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import timm
import torch

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's names on the hub, preferred first
REACH_TIMEOUT_S = 5.0


def cached_weights(name: str) -> Path | None:
    """The local file of ``name``'s default pretrained weights, if a cache holds it."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in HUB_FILES:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    url = cfg.url if isinstance(cfg.url, str) else (cfg.url or [""])[0]
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if candidate.is_file():
            return candidate
    return None


def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` (False when it is set offline)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "yes"):
        return False
    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def resolve_pretrained(name: str) -> Path | None:
    """A cached weights file for ``name``, or None when timm may download them now.

    Raises:
        ValueError: no cached weights and the hub cannot be reached, with where to put a file.
    """
    found = cached_weights(name)
    if found is not None or hub_reachable():
        return found
    from huggingface_hub import constants

    raise ValueError(
        f"pretrained weights for {name} are not in the local caches ({constants.HF_HUB_CACHE}, "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'}) and {constants.ENDPOINT} cannot be reached. "
        "Save timm-format weights (a .safetensors or .pth state dict of this model, e.g. "
        f"timm.create_model('{name}', pretrained=True).state_dict() saved on a machine with "
        "internet) and give the file as embeddings.weights (or copy that machine's Hugging Face "
        "cache here)"
    )
