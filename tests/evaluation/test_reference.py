"""Raw-pixel weighted kNN on the full Fashion-MNIST reproduces the reference numbers (slow)."""

from __future__ import annotations

import pytest
import torch

from sslflow.data.datasets import fashion_mnist
from sslflow.evaluation.features import RawPixels
from sslflow.evaluation.knn import weighted_knn


@pytest.mark.slow
def test_raw_pixel_knn_reference_numbers() -> None:
    train, test = fashion_mnist(split="train"), fashion_mnist(split="test")
    pixels = RawPixels(28)
    # The shard reader yields (C, H, W); idx arrays are (N, H, W): add the channel axis.
    train_x = pixels.embed(torch.from_numpy(train.images[:, None]))
    test_x = pixels.embed(torch.from_numpy(test.images[:, None]))
    dino, lightly = weighted_knn(
        train_x,
        torch.from_numpy(train.labels),
        test_x,
        torch.from_numpy(test.labels),
        [(20, 0.07), (200, 0.1)],
    )
    # The numbers of docs/probing.md, "Sanity numbers": cosine on L2-normalised pixels, 60k / 10k.
    assert dino.top1 == pytest.approx(0.846, abs=0.0015)
    assert lightly.top1 == pytest.approx(0.789, abs=0.0015)
