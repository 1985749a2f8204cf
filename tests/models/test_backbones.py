"""Backbones from timm and frozen-backbone export: shapes, stems, round trips, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from sslflow.models import (
    FrozenBackbone,
    create_backbone,
    load_backbone,
    random_backbone,
    save_backbone,
    timm_backbone,
)


def _images(batch: int = 4, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=generator
    )


def test_small_stem_resnet_keeps_resolution_and_one_channel() -> None:
    module, dim = create_backbone("resnet10t", in_chans=1, image_size=28, small_stem=True)
    assert (
        module.conv1.in_channels == 1
        and module.conv1.kernel_size == (3, 3)
        and module.conv1.stride == (1, 1)
    )
    assert isinstance(module.maxpool, nn.Identity)
    # 28 px through a stride-1 stem and three stride-2 stages leaves a 4×4 map (7×7 stem: 1×1).
    assert module.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, dim, 4, 4)
    assert module(torch.zeros(2, 1, 28, 28)).shape == (2, dim)
    assert dim == 512


def test_standard_stem_when_small_stem_is_off() -> None:
    module, _ = create_backbone("resnet18", in_chans=3, image_size=64, small_stem=False)
    assert module.conv1.kernel_size == (7, 7) and isinstance(module.maxpool, nn.MaxPool2d)


def test_vit_gets_patch_size_for_small_images() -> None:
    module, dim = create_backbone("vit_tiny_patch16_224", in_chans=1, image_size=28)
    assert module.patch_embed.patch_size == (4, 4)
    assert module.patch_embed.grid_size == (7, 7)
    assert module(torch.zeros(2, 1, 28, 28)).shape == (2, dim) and dim == 192


def test_unknown_backbone_lists_timm_names() -> None:
    with pytest.raises(ValueError, match="resnet18") as info:
        create_backbone("resnet18x")
    assert "Close timm names" in str(info.value)


def test_small_stem_on_other_architectures_is_an_error() -> None:
    with pytest.raises(ValueError, match="small_stem=False"):
        create_backbone("mobilenetv3_small_050", in_chans=1, image_size=28, small_stem=True)


def test_pretrained_from_local_file_adapts_channels(tmp_path: Path) -> None:
    # timm-format RGB weights saved by the test itself (no download is possible here).
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=0, in_chans=3)
    weights = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), weights)
    module, _ = create_backbone(
        "resnet10t", in_chans=1, image_size=64, small_stem=False, pretrained=str(weights)
    )
    # timm sums the RGB filters of the first convolution into the single grey channel.
    first = "conv1.0.weight"
    assert torch.allclose(
        module.state_dict()[first], source.state_dict()[first].sum(dim=1, keepdim=True)
    )
    assert torch.equal(
        module.state_dict()["layer4.0.conv1.weight"], source.state_dict()["layer4.0.conv1.weight"]
    )
    frozen = timm_backbone("resnet10t", str(weights), in_chans=1, image_size=64)
    assert frozen.mean == (0.449,) and frozen.embed(_images(size=64)).shape == (4, 512)


def test_missing_pretrained_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        create_backbone("resnet10t", pretrained=str(tmp_path / "missing.pth"))


def test_random_backbone_is_reproducible_and_frozen() -> None:
    a = random_backbone("resnet10t", seed=3)
    b = random_backbone("resnet10t", seed=3)
    c = random_backbone("resnet10t", seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not a.module.training and not any(p.requires_grad for p in a.module.parameters())


def test_save_load_round_trip_gives_identical_features(tmp_path: Path) -> None:
    backbone = random_backbone("resnet10t", seed=0)
    backbone.mean, backbone.std = (0.286,), (0.353,)
    path = save_backbone(backbone, tmp_path / "ckpt" / "backbone.pt")
    assert not list(path.parent.glob("*.partial"))
    loaded = load_backbone(path)
    images = _images()
    assert torch.equal(loaded.embed(images), backbone.embed(images))
    assert loaded.fingerprint() == backbone.fingerprint()
    assert (loaded.mean, loaded.std, loaded.name, loaded.small_stem) == (
        (0.286,),
        (0.353,),
        "resnet10t",
        True,
    )


class _RunsACommand:
    """A pickled object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_checkpoints_that_are_not_weights_only_are_refused_without_running_code(
    tmp_path: Path,
) -> None:
    import pickle

    marker = tmp_path / "ran"
    (tmp_path / "code.pt").write_bytes(pickle.dumps(_RunsACommand(marker)))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for name, message in [
        ("code.pt", "not a weights-only checkpoint .*UnpicklingError.*never pickled objects"),
        ("tensor.pt", "holds a Tensor, not an sslflow backbone checkpoint"),
        ("junk.pt", "not a weights-only checkpoint"),
    ]:
        with pytest.raises(ValueError, match=message) as raised:
            load_backbone(tmp_path / name)
        assert str(tmp_path / name) in str(raised.value)
    assert not marker.exists()


def test_embed_converts_channels_and_size() -> None:
    grey = random_backbone("resnet10t", in_chans=1, image_size=28)
    rgb = _images(channels=3, size=32)
    assert grey.embed(rgb).shape == (4, 512)
    colour = random_backbone("resnet10t", in_chans=3, image_size=28)
    assert colour.embed(_images(channels=1)).shape == (4, 512)
    # Conversion by luminance: an RGB image with equal channels embeds like its grey version.
    same = _images(channels=1).expand(-1, 3, -1, -1).contiguous()
    assert torch.allclose(grey.embed(same), grey.embed(_images(channels=1)), atol=1e-4)


def test_bad_inputs_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a file nor an MLflow model URI"):
        load_backbone(tmp_path / "nothing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an sslflow backbone checkpoint"):
        load_backbone(tmp_path / "other.pt")
    module, dim = create_backbone("resnet10t")
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        FrozenBackbone(module, "resnet10t", 1, 28, (0.5, 0.5), (0.5,), dim)


def test_compute_device_is_cuda_only_when_there_is_one() -> None:
    from sslflow.devices import compute_device

    assert compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_features_match_the_cpu_path() -> None:
    backbone = random_backbone("resnet10t", seed=5)
    images = _images(size=28)
    on_cpu = backbone.embed(images)
    on_gpu = backbone.to("cuda").embed(images)
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(on_cpu, on_gpu, dim=1)
    assert float(cosine.min()) > 0.99  # bf16 autocast: same features within bf16 rounding
