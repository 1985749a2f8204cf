"""Sources: Fashion-MNIST lookup, CIFAR batches, image folders, digits, shards, and bad input."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslflow.data import ShardDataset, SourceError, open_source, write_shards
from sslflow.data.datasets import fashion_mnist_dir
from sslflow.data.samples import Sample
from sslflow.data.tar import iter_samples


def test_fashion_mnist_found_in_debian_location_with_official_split() -> None:
    train = open_source("fashion-mnist", split="train")
    test = open_source("fashion-mnist", split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    first = next(train.iter_items())
    assert isinstance(first, Sample) and first.key == "fmnist-train-000000" and first.label == 9
    assert first.image.size == (28, 28) and train.classes[9] == "ankle boot"


def test_fashion_mnist_lookup_prefers_explicit_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = fashion_mnist_dir()
    assert debian is not None
    local = tmp_path / "fm"
    local.mkdir()
    for file in debian.glob("*.gz"):
        (local / file.name).symlink_to(file)
    assert fashion_mnist_dir(local) == local
    monkeypatch.setenv("SSLFLOW_DATA", str(tmp_path))
    (tmp_path / "fashion-mnist").symlink_to(local)
    assert fashion_mnist_dir() == tmp_path / "fashion-mnist"


def test_missing_fashion_mnist_path_names_path_and_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sslflow.data.datasets.DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.delenv("SSLFLOW_DATA", raising=False)  # `make test` points it at its own copy
    with pytest.raises(
        SourceError, match=r"(?s)missing-folder.*apt-get install dataset-fashion-mnist.*--download"
    ):
        open_source("fashion-mnist", path=str(tmp_path / "missing-folder"))


def test_unknown_source_lists_valid_names() -> None:
    with pytest.raises(
        SourceError, match="fashion-mnist, cifar10, cifar100, image-folder, digits, shards"
    ):
        open_source("imagenet")


def test_missing_path_fails_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source("image-folder", path=str(tmp_path / "absent"))
    assert list(tmp_path.iterdir()) == []


def write_image(path: Path, mode: str, fmt: str, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    base = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    image = base.convert(mode)
    image.save(path, format=fmt)


def test_image_folder_with_classes_keeps_bytes_and_converts_odd_modes(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image(root / "cat" / "a.jpg", "RGB", "JPEG")
    write_image(root / "cat" / "b.webp", "RGB", "WEBP")
    write_image(root / "dog" / "c.png", "P", "PNG")
    write_image(root / "dog" / "d.png", "RGBA", "PNG")
    write_image(root / "dog" / "e.jpg", "CMYK", "JPEG")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    source = open_source("image-folder", path=str(root))
    assert source.classes == ["cat", "dog"]
    samples = list(source.iter_items())
    assert len(samples) == 6 and all(
        isinstance(i, Sample) for i in samples
    )  # bytes only: decoding is the writer's
    assert {s.label for s in samples} == {0, 1} and all("." not in s.key for s in samples)

    manifest = write_shards(source, tmp_path / "shards", progress=False)
    assert manifest.total_samples == 5 and len(manifest.skipped) == 1
    assert manifest.skipped[0]["where"] == "dog/broken.png" and manifest.skipped[0]["reason"]
    with open(manifest.urls()[0], "rb") as handle:
        stored = {json.loads(raw["json"])["path"]: raw for raw in iter_samples(handle, "shard")}
    assert (
        stored["cat/a.jpg"]["jpg"] == (root / "cat" / "a.jpg").read_bytes()
    )  # original bytes kept
    assert "webp" in stored["cat/b.webp"]
    for converted, mode in (("dog/c.png", "P"), ("dog/d.png", "RGBA"), ("dog/e.jpg", "CMYK")):
        assert Image.open(io.BytesIO(stored[converted]["png"])).mode == "RGB"
        assert json.loads(stored[converted]["json"])["original_mode"] == mode
    decoded = list(ShardDataset(manifest, image_mode="RGB"))
    assert all(d["image"].shape == (3, 10, 12) for d in decoded)


def test_image_folder_without_classes_is_unlabelled(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png", "L", "PNG")
    write_image(tmp_path / "sub" / "y.png", "RGB", "PNG")
    source = open_source("image-folder", path=str(tmp_path))
    assert source.classes is None
    assert all(item.label is None for item in source.iter_items())


def test_digits_split_is_disjoint_and_complete() -> None:
    train, test = open_source("digits", split="train"), open_source("digits", split="test")
    assert len(train) + len(test) == 1797 and len(test) == 360


def write_cifar10(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [b"airplane", b"automobile", b"bird", b"cat"]})
    )


def test_cifar10_batches_directory(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    source = open_source("cifar10", path=str(tmp_path / "cifar-10-batches-py"), split="train")
    assert len(source) == 20 and source.classes[:2] == ["airplane", "automobile"]
    sample = next(source.iter_items())
    assert sample.image.size == (32, 32) and sample.image.mode == "RGB"


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_cifar_loader_refuses_pickled_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing builtins.print"):
        open_source("cifar10", path=str(tmp_path / "c"), split="test")


def test_shards_source_rewrites_existing_shards_keeping_keys(
    fmnist_subset: object, tmp_path: Path
) -> None:
    test = fmnist_subset.test  # type: ignore[attr-defined]
    source = open_source("shards", path=str(test.root / "manifest.json"))
    assert len(source) == 500 and source.classes == test.classes
    copy = write_shards(source, tmp_path, shard_size=200, progress=False)
    original = [s["key"] for s in ShardDataset(test)]
    assert [s["key"] for s in ShardDataset(copy)] == original


def test_concat_source_prefixes_keys_keeps_matching_labels_and_resumes(tmp_path: Path) -> None:
    from sslflow.data.datasets import ArraySource, digits
    from sslflow.data.sources import ConcatSource

    pool, other = digits("train"), digits("test")
    renamed = ArraySource(
        "other", other.images, other.labels, "other", {"x": 1}, classes=["a"] * 10
    )
    source = ConcatSource([("", pool), ("inbox-a", other), ("inbox-b", renamed)])
    assert len(source) == len(pool) + 2 * len(other) and source.classes == pool.classes
    items = list(source.iter_items())
    assert [i.key for i in items[:1]] == ["digits-train-000000"]
    assert (
        items[len(pool)].key == "inbox-a-digits-test-000000"
        and items[len(pool)].label == other.labels[0]
    )
    assert (
        items[-1].key.startswith("inbox-b-") and items[-1].label is None
    )  # other classes: unlabelled
    assert [i.key for i in source.iter_items(len(pool) + 5)] == [
        i.key for i in items[len(pool) + 5 :]
    ]
    whole = write_shards(source, tmp_path / "whole", shard_size=400, progress=False)
    assert whole.total_samples == len(source)
