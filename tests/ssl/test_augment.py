"""RGB colour augmentation of the batched views: defaults, validation, colour maths, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from sslflow.ssl.augment import AugmentConfig, ViewAugment, adjust_saturation, luminance, rotate_hue
from sslflow.ssl.methods import ViewSpec

RGB_MEAN, RGB_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # normalisation that returns the [0, 1] values
SIMCLR = ViewSpec(n_global=2, global_scale=(0.08, 1.0))
# NTSC YIQ chroma rows; Y is taken from luminance() (ITU-R 601, as match_channels).
IQ = torch.tensor([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def yiq(images: torch.Tensor) -> torch.Tensor:
    """YIQ coordinates (B, 3, H, W) of float RGB images."""
    return torch.cat([luminance(images), torch.einsum("ij,bjhw->bihw", IQ, images)], dim=1)


def draws(generator: torch.Generator) -> torch.Tensor:
    """A fingerprint of the generator's position."""
    return torch.rand(4, generator=generator)


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    """16 real photo patches, uint8 (16, 3, 64, 64), from scikit-learn's two sample images."""
    crops = [
        image[y : y + 64, x : x + 64]
        for image in load_sample_images().images
        for y in (60, 180, 300)
        for x in (100, 260, 420)
    ][:16]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_for_channels_turns_colour_on_for_rgb_only() -> None:
    grey = AugmentConfig.for_channels(1)
    assert grey == AugmentConfig()
    assert (grey.saturation, grey.hue, grey.grayscale_p) == (0.0, 0.0, 0.0)
    rgb = AugmentConfig.for_channels(3)
    assert (rgb.saturation, rgb.hue, rgb.grayscale_p) == (0.4, 0.1, 0.2)
    assert dataclasses.replace(rgb, saturation=0.0, hue=0.0, grayscale_p=0.0) == AugmentConfig()
    tuned = AugmentConfig.for_channels(3, {"hue": 0.0, "flip_p": 0.0})
    assert (tuned.saturation, tuned.hue, tuned.flip_p) == (0.4, 0.0, 0.0)
    # ViewAugment without a config uses the same defaults.
    assert ViewAugment(SIMCLR, 32, 3, RGB_MEAN, RGB_STD).config == rgb
    assert ViewAugment(SIMCLR, 32, 1, (0.5,), (0.25,)).config == grey


def test_unknown_fields_are_named_with_every_valid_field() -> None:
    message = r"unknown AugmentConfig field\(s\) \['hue_p', 'sat'\]; valid fields: flip_p, "
    with pytest.raises(ValueError, match=message) as e:
        AugmentConfig.for_channels(3, {"sat": 0.4, "hue_p": 0.1, "hue": 0.1})
    for field in dataclasses.fields(AugmentConfig):
        assert field.name in str(e.value)


@pytest.mark.parametrize("field", ["saturation", "hue", "grayscale_p"])
def test_colour_on_grey_images_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"colour augmentation needs 3 channels.*{field}"):
        AugmentConfig.for_channels(1, {field: 0.1})
    with pytest.raises(ValueError, match="colour augmentation needs 3 channels"):
        ViewAugment(SIMCLR, 28, 1, (0.5,), (0.25,), AugmentConfig(**{field: 0.1}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("saturation", 1.0), ("saturation", -0.1), ("hue", 0.6), ("hue", -0.1), ("grayscale_p", 1.5)],
)
def test_out_of_range_colour_strengths_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}="):
        AugmentConfig(**{field: value})


def test_saturation_zero_is_grey_and_one_is_the_image() -> None:
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    grey = adjust_saturation(images, torch.zeros(4))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[:, :1], luminance(images))
    torch.testing.assert_close(adjust_saturation(images, torch.ones(4)), images)


def test_hue_rotation_keeps_luminance_and_chroma_magnitude_and_turns_the_chroma() -> None:
    # Mid-range colours stay inside the RGB cube after any rotation, so clamping does not act.
    images = 0.4 + 0.2 * torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([0.0, 0.1, -0.1, 0.25, 0.5, 1.0])
    shifted = rotate_hue(images, turns)
    before, after = yiq(images), yiq(shifted)
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-5, rtol=0)
    chroma = before[:, 1:].norm(dim=1)
    torch.testing.assert_close(after[:, 1:].norm(dim=1), chroma, atol=1e-5, rtol=0)
    # The chroma angle moves by -2π·turns (I-Q angles run opposite to HSV hue).
    angle = torch.atan2(after[:, 2], after[:, 1]) - torch.atan2(before[:, 2], before[:, 1])
    expected = -2 * torch.pi * turns[:, None, None]
    wrapped = torch.remainder(angle - expected + torch.pi, 2 * torch.pi) - torch.pi
    torch.testing.assert_close(wrapped, torch.zeros_like(angle), atol=1e-3, rtol=0)
    torch.testing.assert_close(shifted[[0, 5]], images[[0, 5]], atol=1e-6, rtol=0)
    assert (shifted[1:5] - images[1:5]).abs().amax(dim=(1, 2, 3)).min() > 0.01


def test_positive_hue_shift_turns_red_towards_green_as_in_hsv() -> None:
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)
    r, g, b = rotate_hue(red, torch.tensor([1 / 3])).flatten().tolist()
    assert g > r and g > b


def test_hue_jitter_in_view_augment_keeps_the_luminance() -> None:
    # One mid-range colour per image: crops do not matter, only the colour step does.
    colours = torch.randint(90, 166, (16, 3, 1, 1), generator=torch.Generator().manual_seed(0))
    images = colours.to(torch.uint8).expand(-1, -1, 12, 12).contiguous()
    config = AugmentConfig(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.5)
    augment = ViewAugment(ViewSpec(n_global=1), 12, 3, *IDENTITY, config)
    (view,) = augment(images, torch.Generator().manual_seed(0))
    source = images.float() / 255
    torch.testing.assert_close(luminance(view), luminance(source), atol=1e-5, rtol=0)
    chroma_change = (yiq(view)[:, 1:] - yiq(source)[:, 1:]).abs().amax(dim=(1, 2, 3))
    assert (chroma_change > 1e-3).float().mean() > 0.8


def test_grayscale_p_one_gives_grey_views(patches: torch.Tensor) -> None:
    config = AugmentConfig.for_channels(3, {"grayscale_p": 1.0, "blur_p": 1.0})
    augment = ViewAugment(SIMCLR, 32, 3, RGB_MEAN, RGB_STD, config)
    for view in augment(patches, torch.Generator().manual_seed(0)):
        assert torch.equal(view[:, 0], view[:, 1]) and torch.equal(view[:, 1], view[:, 2])


@pytest.mark.parametrize("in_chans", [1, 3])
def test_colour_off_leaves_the_views_and_the_draws_unchanged(
    patches: torch.Tensor, in_chans: int
) -> None:
    """With colour strengths 0 the generator is used exactly as before the colour steps existed."""
    spec = ViewSpec(n_global=2, n_local=2)
    mean, std = RGB_MEAN[:in_chans], RGB_STD[:in_chans]
    off = {"blur_p": 0.5, "saturation": 0.0, "hue": 0.0, "grayscale_p": 0.0}
    configs = (AugmentConfig(blur_p=0.5), AugmentConfig.for_channels(in_chans, off))
    generators = [torch.Generator().manual_seed(3) for _ in configs]
    views = [
        ViewAugment(spec, 32, in_chans, mean, std, config)(patches, generator)
        for config, generator in zip(configs, generators)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*views))
    # Per view: crop (4 draws), flip, jitter, brightness, contrast; globals also blur (2 draws).
    reference = torch.Generator().manual_seed(3)
    for _ in range(spec.n_views * 8 + spec.n_global * 2):
        torch.rand(len(patches), generator=reference)
    assert torch.equal(draws(generators[1]), draws(reference))


def test_colour_views_follow_the_seed(patches: torch.Tensor) -> None:
    augment = ViewAugment(SIMCLR, 32, 3, RGB_MEAN, RGB_STD)
    views = augment(patches, torch.Generator().manual_seed(0))
    again = augment(patches, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    other = augment(patches, torch.Generator().manual_seed(1))
    assert not any(torch.equal(a, b) for a, b in zip(views, other))


def test_real_rgb_patches_give_finite_normalised_views(patches: torch.Tensor) -> None:
    spec = ViewSpec(n_global=2, n_local=2, global_scale=(0.08, 1.0))
    config = AugmentConfig.for_channels(3, {"blur_p": 0.5})
    augment = ViewAugment(spec, 32, 3, RGB_MEAN, RGB_STD, config)
    views = augment(patches, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(16, 3, 32, 32)] * 2 + [(16, 3, 14, 14)] * 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    # Normalised range: (0 - 0.5) / 0.25 = -2 .. (1 - 0.5) / 0.25 = 2.
    assert all(v.min() >= -2 - 1e-5 and v.max() <= 2 + 1e-5 for v in views)
    assert not torch.equal(views[0], views[1])
