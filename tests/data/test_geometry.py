"""Image geometry from the data: what ingest records, how readers unify modes, EXIF, resizing."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from photo_folder import PhotoFolder, build_photo_folder
from sslflow.data import (
    ImageGeometry,
    Manifest,
    ShardDataset,
    geometry_of,
    open_source,
    write_shards,
)
from sslflow.data.samples import SourceError
from sslflow.data.tar import iter_samples


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoFolder:
    return build_photo_folder(
        tmp_path_factory.mktemp("photos") / "folder", per_class=8, grey=3, cmyk=1
    )


def test_manifest_records_modes_and_sides(photos: PhotoFolder, tmp_path: Path) -> None:
    manifest = write_shards(
        open_source("image-folder", path=str(photos.root)),
        tmp_path / "s",
        shard_size=10,
        progress=False,
    )
    geometry = manifest.geometry
    assert geometry is not None and geometry.samples == len(photos.files)
    assert geometry.modes == {
        "L": photos.modes["L"],
        "RGB": len(photos.files) - photos.modes["L"],
    }  # CMYK → RGB
    shorter = sorted(min(size) for size in photos.sizes)
    assert geometry.short_side(0) == shorter[0] and geometry.short_side(1) == shorter[-1]
    assert geometry.short_side(0.5) == shorter[len(shorter) // 2]
    assert geometry.mode == "RGB" and geometry.channels == 3
    assert geometry.image_size() == min(224, shorter[int(0.05 * len(shorter))])
    assert geometry.smaller_than(shorter[0] + 1) == shorter.count(shorter[0])
    reloaded = Manifest.load(tmp_path / "s")
    assert reloaded.geometry == geometry  # histograms survive the JSON round trip


def test_geometry_survives_resume(photos: PhotoFolder, tmp_path: Path) -> None:
    """A resumed write merges the journal's per-shard geometry with the shards it writes."""
    source = open_source("image-folder", path=str(photos.root))
    whole = write_shards(source, tmp_path / "whole", shard_size=10, progress=False)

    class Crash(Exception):
        pass

    def crash_after_two(info: object) -> None:
        if len(list((tmp_path / "resumed").glob("shard-*.tar"))) == 2:
            raise Crash

    with pytest.raises(Crash):
        write_shards(
            source, tmp_path / "resumed", shard_size=10, progress=False, on_shard=crash_after_two
        )
    resumed = write_shards(source, tmp_path / "resumed", shard_size=10, progress=False)
    assert resumed.content_hash == whole.content_hash and resumed.geometry == whole.geometry


def test_mixed_modes_read_as_one_mode_and_batch(photos: PhotoFolder, tmp_path: Path) -> None:
    manifest = write_shards(
        open_source("image-folder", path=str(photos.root)), tmp_path / "s", progress=False
    )
    channels = Counter(sample["image"].shape[0] for sample in ShardDataset(manifest))
    assert channels == {3: len(photos.files)}  # grey and CMYK files come out RGB
    grey = ShardDataset(manifest, image_mode=None)
    assert (
        Counter(s["image"].shape[0] for s in grey)[1] == photos.modes["L"]
    )  # None keeps each mode


def test_exif_orientation_is_applied(photos: PhotoFolder, tmp_path: Path) -> None:
    manifest = write_shards(
        open_source("image-folder", path=str(photos.root)), tmp_path / "s", progress=False
    )
    upright = {
        str(path.relative_to(photos.root)): size for path, size in zip(photos.files, photos.sizes)
    }
    shapes = {}
    for tensor, pil in zip(ShardDataset(manifest), ShardDataset(manifest, decode="pil")):
        shapes[tensor["key"]] = (tuple(tensor["image"].shape[1:][::-1]), pil["image"].size)
    source = open_source("image-folder", path=str(photos.root))
    for sample in source.iter_items():
        width_height, pil_size = shapes[sample.key]
        assert width_height == pil_size == upright[sample.meta["path"]]
    assert photos.exif_rotated  # the folder really has rotated files


def test_max_side_downscales_rotates_and_reencodes(photos: PhotoFolder, tmp_path: Path) -> None:
    manifest = write_shards(
        open_source("image-folder", path=str(photos.root)),
        tmp_path / "s",
        max_side=64,
        jpeg_quality=80,
        progress=False,
    )
    assert manifest.geometry is not None and max(manifest.geometry.long_sides) <= 64
    upright = {
        str(path.relative_to(photos.root)): size for path, size in zip(photos.files, photos.sizes)
    }
    for sample in ShardDataset(manifest, decode="pil", image_mode=None):
        width, height = sample["image"].size
        assert max(width, height) <= 64
    for item in open_source("image-folder", path=str(photos.root)).iter_items():
        w, h = upright[item.meta["path"]]
        if max(w, h) > 256 and item.meta["path"].endswith(
            ".jpg"
        ):  # JPEG: decoded by draft at ≤ 1/2 scale
            stored = next(s for s in ShardDataset(manifest, decode="pil") if s["key"] == item.key)[
                "image"
            ]
            assert abs(stored.width / stored.height - w / h) < 0.1
            with open(manifest.urls()[0], "rb") as handle:
                metas = [json.loads(raw["json"]) for raw in iter_samples(handle, "shard")]
            recorded = next(m for m in metas if m["path"] == item.meta["path"])["original_size"]
            assert sorted(recorded) == sorted(
                (w, h)
            )  # the size of the file, not of the draft decode
            break
    with pytest.raises(ValueError, match="max_side"):
        write_shards(
            open_source("image-folder", path=str(photos.root)),
            tmp_path / "bad",
            max_side=-1,
            progress=False,
        )


def test_ingest_order_is_shuffled_and_seeded(photos: PhotoFolder) -> None:
    source = open_source("image-folder", path=str(photos.root))
    labels = [item.label for item in source.iter_items()]
    assert labels != sorted(labels)  # a folder listed by class would give sorted labels
    first_shard = labels[: len(labels) // 4]
    assert len(set(first_shard)) >= 0.8 * len(photos.classes)
    again = [item.label for item in open_source("image-folder", path=str(photos.root)).iter_items()]
    assert again == labels


def test_edited_file_changes_the_source_identity(tmp_path: Path) -> None:
    folder = build_photo_folder(tmp_path / "f", per_class=2, grey=0, cmyk=0, exif_rotated=0)
    before = open_source("image-folder", path=str(folder.root)).describe()
    target = folder.files[0]
    stat = target.stat()
    image = Image.open(target)
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, format=image.format)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = open_source("image-folder", path=str(folder.root)).describe()
    assert before["listing"] != after["listing"] and before["samples"] == after["samples"]


def test_split_of_image_folders(tmp_path: Path) -> None:
    layout = build_photo_folder(
        tmp_path / "split", per_class=4, split=True, grey=0, cmyk=0, exif_rotated=0
    )
    train = open_source("image-folder", path=str(layout.root), split="train")
    test = open_source("image-folder", path=str(layout.root), split="test")
    both = open_source("image-folder", path=str(layout.root), split="all")
    assert train.classes == test.classes == both.classes == layout.classes  # classes one level down
    assert len(train) + len(test) == len(both) == len(layout.files)
    assert {item.key for item in train.iter_items()}.isdisjoint(
        item.key for item in test.iter_items()
    )
    pool = build_photo_folder(tmp_path / "pool", per_class=1, grey=0, cmyk=0, exif_rotated=0)
    with pytest.raises(SourceError, match="train/ and test/"):
        open_source("image-folder", path=str(pool.root), split="test")
    with pytest.raises(SourceError, match="valid splits"):
        open_source("image-folder", path=str(pool.root), split="bogus")


def test_truncated_file_is_skipped_at_ingest(tmp_path: Path) -> None:
    folder = build_photo_folder(tmp_path / "f", per_class=2, grey=0, cmyk=0, exif_rotated=0)
    victim = next(p for p in folder.files if p.suffix == ".jpg")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    manifest = write_shards(
        open_source("image-folder", path=str(folder.root)), tmp_path / "s", progress=False
    )
    assert manifest.total_samples == len(folder.files) - 1
    assert [s["where"] for s in manifest.skipped] == [str(victim.relative_to(folder.root))]


def test_geometry_is_measured_for_manifests_without_it(tmp_path: Path) -> None:
    folder = build_photo_folder(tmp_path / "f", per_class=2, grey=0, cmyk=0, exif_rotated=0)
    manifest = write_shards(
        open_source("image-folder", path=str(folder.root)), tmp_path / "s", progress=False
    )
    recorded = manifest.geometry
    manifest.geometry = None
    assert geometry_of(manifest) == recorded


def test_geometry_histogram_quantiles() -> None:
    geometry = ImageGeometry()
    for side in (8, 10, 20, 30, 40, 50, 60, 70, 80, 500):
        geometry.add("L", side, side * 2)
    assert (geometry.short_side(0), geometry.short_side(0.5), geometry.short_side(1)) == (
        8,
        50,
        500,
    )
    assert geometry.image_size() == 8 and geometry.image_size(cap=4) == 4 and geometry.mode == "L"
    buffer = io.BytesIO()
    Image.new("CMYK", (4, 4)).save(buffer, format="JPEG")
    geometry.add(Image.open(buffer).mode, 4, 4)
    assert geometry.mode == "RGB" and torch.tensor(geometry.channels) == 3
