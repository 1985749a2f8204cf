"""The pretrained-embedder path with real ImageNet weights (EfficientNet-Lite0, from a package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from photo_folder import sample_photos
from pretrained_weights import MODEL, efficientnet_lite0_weights
from sslflow.models import random_backbone, timm_backbone

CHURCH, BELL_COTE, PALACE, DAISY = 497, 442, 698, 985  # ImageNet class indices


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return efficientnet_lite0_weights(tmp_path_factory.mktemp("weights"))


def _tensor(image: np.ndarray, side: int = 224) -> torch.Tensor:
    resized = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()


def test_converted_weights_classify_the_sample_photos(weights: Path) -> None:
    model = timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    model.eval()
    photos = sample_photos()
    batch = torch.stack([_tensor(photos["china"]), _tensor(photos["flower"])]).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = model((batch - mean) / std).topk(5).indices.tolist()
    assert {CHURCH, BELL_COTE, PALACE} & set(top5[0][:3]), top5[0]
    assert DAISY in top5[1], top5[1]


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``count`` random square crops of a quarter to half the shorter side, resized to 128 px."""
    height, width = image.shape[:2]
    crops = []
    for _ in range(count):
        side = int(rng.integers(min(height, width) // 4, min(height, width) // 2))
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        crops.append(_tensor(image[top : top + side, left : left + side], 128))
    return crops


def _same_photo_margin(embeddings: torch.Tensor, photo: torch.Tensor) -> float:
    """Mean cosine similarity between crops of one photo minus that between different photos."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    similarity = unit @ unit.T
    same = photo[:, None] == photo[None, :]
    off_diagonal = ~torch.eye(len(photo), dtype=torch.bool)
    return float(similarity[same & off_diagonal].mean() - similarity[~same].mean())


def test_pretrained_embeddings_group_crops_by_photo(weights: Path) -> None:
    rng = np.random.default_rng(0)
    photos = sample_photos()
    crops, photo = [], []
    for index, name in enumerate(sorted(photos)):
        new = _crops(photos[name], 12, rng)
        crops += new
        photo += [index] * len(new)
    images, owner = torch.stack(crops), torch.tensor(photo)
    pretrained = timm_backbone(MODEL, str(weights), image_size=128).embed(images)
    untrained = random_backbone(MODEL, 3, 128, seed=0, small_stem=False).embed(images)
    margin = _same_photo_margin(pretrained, owner)  # measured: 0.19; untrained, pixels: 0.002
    assert margin > 0.1
    assert margin > 5 * _same_photo_margin(untrained, owner)
    assert margin > 5 * _same_photo_margin(images.flatten(1), owner)
