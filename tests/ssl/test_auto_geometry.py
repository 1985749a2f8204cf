"""`auto` image settings resolved from the manifest, and the one evaluation transform."""

from __future__ import annotations

import logging

import pytest
import torch

from photo_folder import PhotoFolder, build_photo_folder
from sslflow.curation.embeddings import EmbedConfig, resolve_geometry
from sslflow.data import Manifest, ShardDataset, open_source, write_shards
from sslflow.evaluation.features import RawPixels
from sslflow.models import CenterCropResize, random_backbone
from sslflow.ssl.config import ConfigError, PretrainConfig
from sslflow.ssl.train import STATS_SAMPLES, _stats_sample, resolve_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhotoFolder, Manifest]:
    root = tmp_path_factory.mktemp("auto")
    folder = build_photo_folder(root / "photos", per_class=12, seed=4)
    return folder, write_shards(
        open_source("image-folder", path=str(folder.root)), root / "shards", progress=False
    )


def test_pretraining_geometry_comes_from_the_manifest(photos: tuple[PhotoFolder, Manifest]) -> None:
    folder, manifest = photos
    count = len(folder.files)  # 12 per class: 72 with scikit-learn's photos, more with skimage's
    with pytest.raises(
        ConfigError,
        match=rf"{count} images, fewer than one batch \(256\): set batch_size ≤ {count}",
    ):
        resolve_config(PretrainConfig(), manifest)
    resolved = resolve_config(PretrainConfig(batch_size=32), manifest)
    shorter = sorted(min(size) for size in folder.sizes)
    assert resolved.in_chans == 3 and resolved.image_size == shorter[int(0.05 * len(shorter))]
    assert len(resolved.mean or ()) == len(resolved.std or ()) == 3
    assert resolved.samples_per_epoch == manifest.total_samples
    grey = resolve_config(PretrainConfig(in_chans=1, batch_size=32), manifest)
    assert grey.in_chans == 1 and len(grey.mean or ()) == 1  # an explicit value overrides auto


def test_crop_larger_than_some_images_warns_and_larger_than_most_is_refused(
    photos: tuple[PhotoFolder, Manifest], caplog: pytest.LogCaptureFixture
) -> None:
    _, manifest = photos
    geometry = manifest.geometry
    assert geometry is not None
    some = geometry.short_side(0.25)
    with caplog.at_level(logging.WARNING, logger="sslflow.ssl.train"):
        resolve_config(PretrainConfig(image_size=some, batch_size=32), manifest)
    assert f"{geometry.smaller_than(some)} images" in caplog.text and "upsampled" in caplog.text
    with pytest.raises(ConfigError, match="larger than most images"):
        resolve_config(
            PretrainConfig(image_size=geometry.short_side(0.5) + 1, batch_size=32), manifest
        )


def test_normalisation_statistics_use_a_bounded_resized_sample(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    _, manifest = photos
    sample = _stats_sample(manifest, 40, seed=0)
    assert (
        sample.shape == (min(STATS_SAMPLES, manifest.total_samples), 3, 40, 40)
        and sample.dtype == torch.uint8
    )
    assert torch.equal(sample, _stats_sample(manifest, 40, seed=0))  # seeded


def test_embedding_geometry_caps_pixels_at_32_and_backbones_at_224(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    _, manifest = photos
    assert manifest.geometry is not None
    pixels = resolve_geometry(EmbedConfig(), manifest.geometry)
    timm = resolve_geometry(EmbedConfig(embedder="resnet10t"), manifest.geometry)
    assert (pixels.image_size, pixels.image_mode, pixels.in_chans) == (
        min(32, manifest.geometry.image_size()),
        "RGB",
        3,
    )
    assert timm.image_size == manifest.geometry.image_size(224)
    assert (
        resolve_geometry(EmbedConfig(image_mode="L", image_size=16), manifest.geometry).image_size
        == 16
    )
    with pytest.raises(ValueError, match="image_mode"):
        resolve_geometry(EmbedConfig(image_mode="CMYK"), manifest.geometry)


def test_export_and_probe_share_the_evaluation_transform(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    """The exported model's preprocessing is the per-sample transform probing applies."""
    _, manifest = photos
    backbone = random_backbone("test_resnet", in_chans=3, image_size=32, seed=0, small_stem=False)
    assert isinstance(backbone.transform, CenterCropResize) and backbone.transform.size == 32
    assert "centre crop" in backbone.config()["preprocess"]
    image = next(iter(ShardDataset(manifest)))["image"]
    cut = backbone.transform(image)
    assert cut.shape == (3, 32, 32)
    assert torch.allclose(backbone.embed(image[None]), backbone.embed(cut[None]), atol=1e-5)
    pixels = RawPixels.for_images(manifest)
    assert pixels.size <= 32 and pixels.embed(image[None]).shape == (1, 3 * pixels.size**2)


def test_center_crop_resize_keeps_the_centre() -> None:
    wide = torch.zeros(3, 20, 40, dtype=torch.uint8)
    wide[:, :, 10:30] = 255  # the centre square is white, the sides black
    cut = CenterCropResize(10)(wide)
    assert (
        cut.shape == (3, 10, 10) and int(cut[:, :, 1:-1].min()) == 255
    )  # antialiasing softens only the rim
    assert int(cut.min()) > 200  # no black side made it in
    assert CenterCropResize(10)(cut) is cut  # no-op at the size
