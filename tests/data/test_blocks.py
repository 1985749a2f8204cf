"""The block layout: many decoded images per tar member, read like the per-sample layout."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sslflow.data import Manifest, ShardDataset, ShardReadError, write_shards
from sslflow.data.blocks import BLOCK_SIZE
from sslflow.data.datasets import ArraySource, digits
from sslflow.data.sources import ShardSource
from sslflow.data.tar import iter_samples


def collect_keys(dataset: ShardDataset, workers: int = 0) -> list[str]:
    return [s["key"] for s in DataLoader(dataset, batch_size=None, num_workers=workers)]


@pytest.fixture(scope="module")
def block_shards(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """All 1,797 digits, written with the default layout (blocks for 8×8 pixels)."""
    return write_shards(
        digits("all"), tmp_path_factory.mktemp("blocks"), shard_size=700, progress=False
    )


@pytest.fixture(scope="module")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return write_shards(
        digits("all"),
        tmp_path_factory.mktemp("samples"),
        shard_size=700,
        progress=False,
        layout="samples",
    )


def test_small_decoded_images_are_written_in_blocks(block_shards: Manifest) -> None:
    with tarfile.open(block_shards.urls()[0]) as archive:
        names = archive.getnames()
    assert names == [
        f"block-00000{n}.{field}"
        for n in (0, 1)
        for field in ("meta.json", "pixels.npy", "samples.json")
    ]
    with tarfile.open(block_shards.urls()[0]) as archive:
        first = np.load(io.BytesIO(archive.extractfile(names[1]).read()), allow_pickle=False)
        body = json.loads(archive.extractfile(names[2]).read())
    assert first.shape == (BLOCK_SIZE, 8, 8) and first.dtype == np.uint8
    assert body["keys"][:2] == ["digits-all-000000", "digits-all-000001"]
    with tarfile.open(block_shards.urls()[0]) as archive:
        meta = json.loads(archive.extractfile("block-000000.meta.json").read())
    assert meta[0] == {"source": "digits", "index": 0, "width": 8, "height": 8}
    assert block_shards.writer["layout"] == "auto"
    assert block_shards.geometry is not None and block_shards.geometry.mode == "L"
    assert block_shards.geometry.samples == 1797


def test_blocks_read_as_the_per_sample_layout_does(
    block_shards: Manifest, sample_shards: Manifest
) -> None:
    for decode in ("tensor", "pil"):
        ours = list(ShardDataset(block_shards, decode=decode))
        plain = list(ShardDataset(sample_shards, decode=decode))
        assert [s["key"] for s in ours] == [s["key"] for s in plain]
        assert [s["label"] for s in ours] == [s["label"] for s in plain]
        pixels = [np.asarray(s["image"]) for s in ours]
        assert all(np.array_equal(a, np.asarray(b["image"])) for a, b in zip(pixels, plain))
    first = next(iter(ShardDataset(block_shards)))["image"]
    assert first.dtype == torch.uint8 and first.shape == (1, 8, 8)
    rgb = next(iter(ShardDataset(block_shards, image_mode="RGB")))["image"]
    assert rgb.shape == (3, 8, 8) and torch.equal(rgb[0], rgb[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_blocks_are_read_exactly_once_across_workers_and_ranks(
    block_shards: Manifest, workers: int
) -> None:
    seen = [
        key
        for rank in range(2)
        for key in collect_keys(ShardDataset(block_shards, rank=rank, world_size=2), workers)
    ]
    assert sorted(seen) == sorted(f"digits-all-{i:06d}" for i in range(1797))


def test_exactly_once_with_fewer_block_shards_than_slots(block_shards: Manifest) -> None:
    one = block_shards.urls()[:1]  # 700 samples in two blocks, four slots
    keys = [
        key
        for rank in range(2)
        for key in collect_keys(ShardDataset(one, rank=rank, world_size=2), workers=2)
    ]
    assert sorted(keys) == [f"digits-all-{i:06d}" for i in range(700)]


def test_resampled_blocks_have_the_epoch_length(block_shards: Manifest) -> None:
    dataset = ShardDataset(block_shards, mode="resampled", samples_per_epoch=900)
    keys = collect_keys(dataset, workers=2)
    assert len(keys) == 900 and len(set(keys)) > 500


def test_corrupt_block_names_block_and_shard(block_shards: Manifest, tmp_path: Path) -> None:
    source = Path(block_shards.urls()[0])
    with open(source, "rb") as handle:
        records = list(iter_samples(handle, str(source)))
    broken = tmp_path / "broken.tar"
    import webdataset as wds

    with wds.TarWriter(str(broken)) as writer:
        for record in records:
            clean = {k: v for k, v in record.items() if k != "__url__"}
            if clean["__key__"] == "block-000001":
                clean["pixels.npy"] = b"\x93NUMPY not an array"
            writer.write(clean)
    with pytest.raises(ShardReadError, match=r"block-000001.*broken.tar"):
        list(ShardDataset([str(broken)]))
    skipping = ShardDataset([str(broken)], on_error="skip")
    assert len(list(skipping)) == BLOCK_SIZE and skipping.errors.bad_samples == 1


def test_block_and_per_sample_shards_mix_in_one_set(
    block_shards: Manifest, sample_shards: Manifest
) -> None:
    urls = [block_shards.urls()[0], sample_shards.urls()[1], block_shards.urls()[2]]
    keys = collect_keys(ShardDataset(urls), workers=2)
    assert sorted(keys) == sorted(f"digits-all-{i:06d}" for i in range(1797))


def test_shape_changes_start_a_new_block_and_max_bytes_cuts_shards(tmp_path: Path) -> None:
    """8 px digits then the same digits at 16 px: two shapes, so separate blocks."""
    base = digits("all")
    small = base.images[:300]
    large = np.stack([np.asarray(Image.fromarray(i).resize((16, 16))) for i in small])

    class TwoSizes(ArraySource):
        def iter_items(self, start: int = 0):  # type: ignore[no-untyped-def]
            for item in ArraySource.iter_items(self, start):
                index = item.meta["index"]
                image = Image.fromarray(small[index] if index < 150 else large[index])
                yield type(item)(item.key, image, item.label, item.meta)

    source = TwoSizes("two", small, base.labels[:300], "two", {"sizes": [8, 16]})
    manifest = write_shards(source, tmp_path, max_bytes=40_000, progress=False)
    assert len(manifest.shards) > 1 and all(s.bytes <= 40_000 + 10_240 for s in manifest.shards)
    images = [s["image"] for s in ShardDataset(manifest, image_mode=None)]
    assert [tuple(i.shape) for i in images] == [(1, 8, 8)] * 150 + [(1, 16, 16)] * 150
    assert torch.equal(images[200][0], torch.from_numpy(large[200]))


def test_rgb_blocks_convert_to_grey_as_pil_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    source = ArraySource("rgb", colour, None, "rgb", {"seed": 0})
    manifest = write_shards(source, tmp_path, progress=False)
    grey = torch.stack([s["image"] for s in ShardDataset(manifest, image_mode="L")])
    expected = np.stack([np.asarray(Image.fromarray(c).convert("L")) for c in colour])
    np.testing.assert_array_equal(grey[:, 0].numpy(), expected)
    assert all(s["label"] == -1 for s in ShardDataset(manifest))


def test_block_shards_reingest_with_pixels_labels_and_layout(
    block_shards: Manifest, tmp_path: Path
) -> None:
    """Shards of block shards (the curated_shards path): same pixels, labels and keys."""
    again = write_shards(
        ShardSource(block_shards.urls(), block_shards.classes, samples=1797),
        tmp_path,
        progress=False,
    )
    ours = list(ShardDataset(again))
    theirs = list(ShardDataset(block_shards))
    assert [s["key"] for s in ours] == [s["key"] for s in theirs]
    assert [s["label"] for s in ours] == [s["label"] for s in theirs]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(ours, theirs, strict=True))
    with tarfile.open(again.urls()[0]) as archive:
        assert archive.getnames()[1] == "block-000000.pixels.npy"


def _batches(dataset: ShardDataset, workers: int) -> list[dict[str, torch.Tensor]]:
    return list(DataLoader(dataset, batch_size=None, num_workers=workers))


def test_batched_resampling_cuts_whole_batches_of_true_pairs(
    block_shards: Manifest, sample_shards: Manifest
) -> None:
    label_of = {bytes(image.tobytes()): int(label) for image, label in zip(*_digit_arrays())}
    mixed = [block_shards.urls()[0], sample_shards.urls()[1], block_shards.urls()[2]]
    for urls in (block_shards.urls(), mixed):
        dataset = ShardDataset(urls, mode="resampled", samples_per_epoch=1000, batch_size=64)
        batches = _batches(dataset, workers=2)
        assert len(batches) == 2 * (500 // 64)  # each worker drops its incomplete batch
        for batch in batches:
            assert batch["image"].shape == (64, 1, 8, 8) and batch["image"].dtype == torch.uint8
            pairs = zip(batch["image"][:, 0].numpy(), batch["label"].tolist(), strict=True)
            assert all(label_of[bytes(image.tobytes())] == label for image, label in pairs)
    again = _batches(
        ShardDataset(block_shards, mode="resampled", samples_per_epoch=1000, batch_size=64), 2
    )
    first = _batches(
        ShardDataset(block_shards, mode="resampled", samples_per_epoch=1000, batch_size=64), 2
    )
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))
    rows = torch.cat([b["image"] for b in first]).flatten(1)
    assert len(torch.unique(rows, dim=0)) > 0.6 * len(rows)  # drawn from the buffer, not repeated


def test_batched_resampling_refuses_mixed_shapes_and_other_modes(tmp_path: Path) -> None:
    base = digits("all")
    small = write_shards(digits("test"), tmp_path / "small", progress=False)
    large_images = np.stack([np.asarray(Image.fromarray(i).resize((16, 16))) for i in base.images])
    large = write_shards(
        ArraySource("large", large_images, base.labels, "large", {"size": 16}),
        tmp_path / "large",
        progress=False,
    )
    dataset = ShardDataset(
        small.urls() + large.urls(), mode="resampled", samples_per_epoch=4000, batch_size=64
    )
    with pytest.raises(ValueError, match="different shapes"):
        _batches(dataset, workers=0)
    with pytest.raises(ValueError, match="batch_size needs mode='resampled'"):
        ShardDataset(small, batch_size=64)


def _digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    source = digits("all")
    return source.images, source.labels
