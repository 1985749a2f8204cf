"""Decoding batches on the training device: equal to the workers' decode on the CPU fallback,
resumable, chosen by ``decode: auto``, and trained through; the CUDA path where there is one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from photo_folder import PhotoFolder, build_photo_folder
from sslflow.data import Manifest, ShardDataset, decode_batch, open_source, write_shards
from sslflow.data.decoding import upright_jpeg
from sslflow.models import CenterCropResize
from sslflow.ssl.config import ConfigError, PretrainConfig
from sslflow.ssl.loader import DeviceDecode, ShardBatches, batches_per_epoch, training_dataset
from sslflow.ssl.train import pretrain, resolve_config

SIDE = 40


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhotoFolder, Manifest]:
    root = tmp_path_factory.mktemp("device-decode")
    folder = build_photo_folder(root / "photos", per_class=8, seed=7, exif_rotated=3)
    source = open_source("image-folder", path=str(folder.root))
    return folder, write_shards(source, root / "shards", shard_size=16, progress=False)


def _finite(manifest: Manifest, decode: str) -> list[dict[str, object]]:
    transform = CenterCropResize(SIDE) if decode == "tensor" else None
    return list(ShardDataset(manifest, decode=decode, transform=transform))


def test_batch_decode_on_the_cpu_equals_the_workers_decode(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    _, manifest = photos
    encoded = _finite(manifest, "encoded")
    reference = _finite(manifest, "tensor")
    assert [s["key"] for s in encoded] == [s["key"] for s in reference]
    images = [s["image"] for s in encoded]
    assert all(isinstance(image, bytes) for image in images)
    kinds = {upright_jpeg(image) for image in images}  # type: ignore[arg-type]
    assert kinds == {True, False}  # nvJPEG's share and the CPU's (PNG, EXIF-rotated JPEG)
    batch = decode_batch(images, "RGB", CenterCropResize(SIDE), torch.device("cpu"))  # type: ignore[arg-type]
    assert batch.dtype == torch.uint8 and batch.shape == (len(images), 3, SIDE, SIDE)
    assert torch.equal(batch, torch.stack([s["image"] for s in reference]))  # type: ignore[misc]


def _epoch(manifest: Manifest, skip: int = 0) -> list[torch.Tensor]:
    batch, workers, samples = 8, 2, 48
    dataset = training_dataset(manifest, samples, SIDE, seed=3, encoded=True)
    length = batches_per_epoch(samples, batch, 1, workers)
    batches = ShardBatches(dataset, batch, workers, length, DeviceDecode(SIDE, "RGB", "cpu"))
    batches.position = lambda: (0, skip)
    return list(batches)


def test_encoded_batches_are_decoded_whole_and_resume_mid_epoch(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    _, manifest = photos
    epoch = _epoch(manifest)
    assert len(epoch) == 6 and all(b.shape == (8, 3, SIDE, SIDE) for b in epoch)
    again = _epoch(manifest)
    assert all(torch.equal(a, b) for a, b in zip(epoch, again, strict=True))
    resumed = _epoch(manifest, skip=4)
    assert all(torch.equal(a, b) for a, b in zip(epoch[4:], resumed, strict=True))


def test_decode_auto_uses_the_workers_without_cuda(photos: tuple[PhotoFolder, Manifest]) -> None:
    _, manifest = photos
    resolved = resolve_config(PretrainConfig(batch_size=16), manifest)
    assert resolved.decode == ("device" if torch.cuda.is_available() else "workers")
    explicit = resolve_config(PretrainConfig(batch_size=16, decode="device"), manifest)
    assert explicit.decode == "device"
    with pytest.raises(ConfigError, match="decode 'gpu' is not one of auto, workers, device"):
        PretrainConfig(decode="gpu").check()


def test_pretraining_with_device_decode_runs_and_logs(
    photos: tuple[PhotoFolder, Manifest], tmp_path: Path
) -> None:
    _, manifest = photos
    config = PretrainConfig(
        backbone="resnet10t",
        image_size=SIDE,
        batch_size=16,
        max_steps=3,
        num_workers=1,
        decode="device",
        progress_bar=False,
        checkpoint_every_n_steps=3,
        accelerator="cpu",
    )
    result = pretrain(config, manifest, tmp_path / "run")
    assert result.steps == 3 and result.config.decode == "device"
    assert torch.isfinite(torch.tensor(result.final_loss))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_batches_match_the_cpu_decoder(photos: tuple[PhotoFolder, Manifest]) -> None:
    _, manifest = photos
    images = [s["image"] for s in _finite(manifest, "encoded")]
    resize = CenterCropResize(SIDE)
    cpu = decode_batch(images, "RGB", resize, torch.device("cpu"))  # type: ignore[arg-type]
    gpu = decode_batch(images, "RGB", resize, torch.device("cuda"))  # type: ignore[arg-type]
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a grey level or two
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 2.0


def test_an_undecodable_image_is_named_after_the_batch_falls_back_to_one_by_one(
    photos: tuple[PhotoFolder, Manifest], caplog: pytest.LogCaptureFixture
) -> None:
    folder, _ = photos
    upright = (p for p in folder.files if p.suffix == ".jpg" and p not in folder.exif_rotated)
    good = next(upright).read_bytes()
    truncated = good[: len(good) // 2]  # its header reads, its pixels do not
    assert upright_jpeg(truncated)
    with caplog.at_level("WARNING"), pytest.raises(ValueError, match="cannot decode bad-key"):
        decode_batch(
            [good, truncated], "RGB", CenterCropResize(SIDE), torch.device("cpu"), ["ok", "bad-key"]
        )
    assert "batched JPEG decode on cpu failed" in caplog.text


def test_run_folders_written_before_decode_existed_still_resume(
    photos: tuple[PhotoFolder, Manifest],
) -> None:
    from sslflow.pipelines.assets.pretraining import run_folder_name

    _, manifest = photos
    workers, device = PretrainConfig(decode="workers"), PretrainConfig(decode="device")
    saved = workers.to_dict()
    del saved["decode"]  # a config.json of an older version, which always decoded in workers
    assert workers.resume_differences(saved) == {}
    assert device.resume_differences(saved) == {"decode": ("workers", "device")}
    assert run_folder_name(workers, manifest) != run_folder_name(device, manifest)
