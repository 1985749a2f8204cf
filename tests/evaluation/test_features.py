"""Feature extraction over shards: exactly once, cached by fingerprint, recomputed when stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sslflow.data import Manifest, write_shards
from sslflow.data.datasets import ArraySource
from sslflow.evaluation.features import (
    RawPixels,
    UnlabelledShardsError,
    cache_dir,
    extract_features,
)


def test_raw_pixels_match_the_images(fmnist_subset, tmp_path: Path) -> None:
    from sslflow.data.datasets import fashion_mnist

    features = extract_features(RawPixels(28), fmnist_subset.test, tmp_path, "test", batch_size=128)
    assert features.features.shape == (500, 784) and features.features.dtype == np.float32
    assert len(set(features.keys)) == 500
    source = fashion_mnist(split="test")
    rows = [int(key.rsplit("-", 1)[1]) for key in features.keys]  # keys are fmnist-test-<index>
    np.testing.assert_array_equal(features.labels, source.labels[rows])
    np.testing.assert_allclose(
        features.features, source.images[rows].reshape(500, -1) / 255.0, atol=1e-6
    )
    assert features.classes == fmnist_subset.test.classes


def test_backbone_features_are_cached_and_reused(fmnist_subset, tmp_path: Path) -> None:
    from sslflow.models import random_backbone

    backbone = random_backbone("test_resnet", small_stem=False)
    first = extract_features(
        backbone, fmnist_subset.test, tmp_path, "test", dim=backbone.feature_dim
    )
    assert first.root == cache_dir(tmp_path, backbone.fingerprint(), "test")
    assert first.features.shape == (500, backbone.feature_dim)
    stamp = (first.root / "features.npy").stat().st_mtime_ns
    again = extract_features(
        backbone, fmnist_subset.test, tmp_path, "test", dim=backbone.feature_dim
    )
    assert (again.root / "features.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    np.testing.assert_array_equal(again.features, first.features)
    other = random_backbone("test_resnet", small_stem=False, seed=1)
    assert extract_features(other, fmnist_subset.test, tmp_path, "test").root != first.root


def test_dimension_mismatch_recomputes(
    fmnist_subset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = extract_features(RawPixels(28), fmnist_subset.test, tmp_path, "test")
    # A cache left by another version of the code: same fingerprint and shards, other width.
    stale = np.lib.format.open_memmap(
        first.root / "features.npy", mode="w+", dtype=np.float32, shape=(500, 16)
    )
    stale[:] = 7.0
    stale.flush()
    meta = json.loads((first.root / "meta.json").read_text())
    (first.root / "meta.json").write_text(json.dumps({**meta, "feature_dim": 16}))
    with caplog.at_level("WARNING"):
        again = extract_features(RawPixels(28), fmnist_subset.test, tmp_path, "test")
    assert "does not match" in caplog.text
    assert again.features.shape == (500, 784) and float(np.max(again.features)) <= 1.0
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*.stale"))


def test_declared_dimension_mismatch_is_an_error(fmnist_subset, tmp_path: Path) -> None:
    extract_features(RawPixels(28), fmnist_subset.test, tmp_path, "test")
    with pytest.raises(ValueError, match="gives 784-d features, expected 32"):
        extract_features(RawPixels(28), fmnist_subset.test, tmp_path, "test", dim=32)


def test_unlabelled_shards_error_names_the_shards(tmp_path: Path) -> None:
    images = np.zeros((6, 8, 8), dtype=np.uint8)
    source = ArraySource("blank", images, None, "blank", {"made": "in test"})
    manifest = write_shards(source, tmp_path / "shards", shard_size=3, progress=False)
    with pytest.raises(UnlabelledShardsError, match=r"shard-000000\.tar.*carry no labels"):
        extract_features(
            RawPixels(28), Manifest.load(tmp_path / "shards"), tmp_path / "cache", "train"
        )
    assert not manifest.labelled
