"""Embeddings of shard sets: pixels + PCA, timm models, resumption after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sslflow.curation.embeddings as embeddings_module
from sslflow.curation import EmbeddingsError, HierarchyConfig, KMeansConfig, build_hierarchy, kmeans
from sslflow.curation.embedding_set import load_embeddings
from sslflow.curation.embeddings import EmbedConfig, embed_shards
from sslflow.curation.storage import save_json, save_lines, save_npy


def test_pixels_embeddings_cover_every_sample_once(fmnist_subset, tmp_path: Path) -> None:
    config = EmbedConfig(dim=8, pca_samples=300, chunk_size=256, progress=False)
    result = embed_shards(fmnist_subset.train, tmp_path / "emb", config)
    array = result.array()
    assert array.dtype == np.float16 and array.shape == (2000, 8)
    assert np.isfinite(array).all()
    assert result.keys() == [f"fmnist-train-{i:06d}" for i in range(2000)]
    assert (result.labels() >= 0).all() and len(np.unique(result.labels())) == 10
    # PCA components are ordered by explained variance
    variances = array.astype(np.float32).var(axis=0)
    assert variances[0] > variances[-1]


def test_interrupted_embedding_resumes_by_chunk(
    fmnist_subset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EmbedConfig(dim=8, pca_samples=300, chunk_size=256, batch_size=128, progress=False)
    reference = embed_shards(fmnist_subset.train, tmp_path / "reference", config)
    real_checkpoint = embeddings_module._checkpoint
    calls = []

    def crash_after_three(*args: object, **kwargs: object) -> None:
        real_checkpoint(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash after the third chunk")

    monkeypatch.setattr(embeddings_module, "_checkpoint", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        embed_shards(fmnist_subset.train, tmp_path / "resumed", config)
    monkeypatch.setattr(embeddings_module, "_checkpoint", real_checkpoint)
    assert not (tmp_path / "resumed" / "meta.json").exists()
    resumed = embed_shards(fmnist_subset.train, tmp_path / "resumed", config)
    np.testing.assert_array_equal(resumed.array(), reference.array())
    assert resumed.keys() == reference.keys()
    np.testing.assert_array_equal(resumed.labels(), reference.labels())


def test_random_timm_model_embeds(fmnist_subset, tmp_path: Path) -> None:
    config = EmbedConfig(
        embedder="test_vit", in_chans=1, image_size=28, batch_size=125, progress=False
    )
    first = embed_shards(fmnist_subset.test, tmp_path / "a", config)
    second = embed_shards(fmnist_subset.test, tmp_path / "b", config)
    assert first.array().shape[0] == 500 and np.isfinite(first.array()).all()
    np.testing.assert_array_equal(first.array(), second.array())  # seeded initialisation
    assert first.meta()["fingerprint"] == second.meta()["fingerprint"]


def test_sslflow_checkpoint_embeds_like_its_backbone(fmnist_subset, tmp_path: Path) -> None:
    from sslflow.models import random_backbone, save_backbone

    backbone = random_backbone("test_vit", in_chans=1, image_size=28, seed=3)
    checkpoint = save_backbone(backbone, tmp_path / "backbone.pt")
    config = EmbedConfig(embedder=str(checkpoint), batch_size=125, progress=False)
    result = embed_shards(fmnist_subset.test, tmp_path / "emb", config)
    assert result.meta()["fingerprint"] == backbone.fingerprint()
    assert result.array().shape == (500, backbone.feature_dim)


def embeddings_folder(root: Path, rows: np.ndarray, keys: int, labels: int) -> Path:
    """An embeddings folder as the embeddings step writes it, with the given contents."""
    save_npy(root / "embeddings.npy", rows)
    save_lines(root / "keys.txt", [f"k{i}" for i in range(keys)])
    save_npy(root / "labels.npy", np.zeros(labels, np.int64))
    save_json(root / "meta.json", {})
    return root


@pytest.mark.parametrize(
    ("rows", "keys", "labels", "message"),
    [
        (np.zeros(40, np.float16), 40, 40, r"shape \(40,\); embeddings are \(N, D\)"),
        (np.zeros((40, 4), np.int64), 40, 40, "holds int64 values"),
        (np.zeros((40, 4), np.float16), 39, 40, "40 rows for 39 keys"),
        (np.zeros((40, 0), np.float32), 40, 40, "no rows or no dimensions"),
        (np.zeros((40, 4), np.float16), 40, 41, r"labels\.npy has shape \(41,\) for 40"),
    ],
)
def test_malformed_embeddings_are_refused_naming_the_file(
    tmp_path: Path, rows: np.ndarray, keys: int, labels: int, message: str
) -> None:
    folder = embeddings_folder(tmp_path / "emb", rows, keys, labels)
    with pytest.raises(EmbeddingsError, match=message) as raised:
        load_embeddings(folder)
    assert str(folder) in str(raised.value)


def test_one_dimensional_rows_name_their_file_in_clustering(tmp_path: Path) -> None:
    save_npy(tmp_path / "flat.npy", np.zeros(100, np.float16))
    flat = np.load(tmp_path / "flat.npy", mmap_mode="r")
    config = HierarchyConfig(levels=[(5, 0, 1)])
    keys = [f"k{i}" for i in range(100)]
    with pytest.raises(EmbeddingsError, match=rf"{tmp_path / 'flat.npy'} has shape \(100,\)"):
        build_hierarchy(flat, keys, tmp_path / "hier", config)
    with pytest.raises(EmbeddingsError, match="has shape"):
        kmeans(flat, KMeansConfig(n_clusters=5))
    assert not (tmp_path / "hier").exists()
