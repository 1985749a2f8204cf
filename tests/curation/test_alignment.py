"""Alignment of copy thumbnails on a real photo: the fitted geometry, coverage, the copy test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from photo_folder import sample_photos
from planted_copies import jpeg, shifted
from sslflow.curation.alignment import coverage, fit_alignment
from sslflow.curation.dedup import CopyRule, find_duplicates, shifted_correlation
from sslflow.curation.fingerprints import CopyFeatures


def features(images: list[np.ndarray]) -> CopyFeatures:
    return CopyFeatures.of_images(
        [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in images]
    )


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    return sample_photos()["china"]


def test_the_fit_recovers_a_crop_keeping_90_percent_of_the_area(china: np.ndarray) -> None:
    original = china[100:260, 200:360]  # the temple: edges and texture
    crop = np.ascontiguousarray(original[:152, :152])  # 0.95 of each side, top-left corner
    thumbs = features([original, crop]).thumbs
    fit = fit_alignment(thumbs[:1], thumbs[1:])
    # the original's point p shows the crop's point (p + 0.05) / 0.95
    np.testing.assert_allclose(
        fit.params[0], [1 / 0.95, 1 / 0.95, 0.05 / 0.95, 0.05 / 0.95], atol=0.01
    )
    assert fit.coverage[0] == pytest.approx(0.95**2, abs=0.02)
    assert fit.detail[0] > 0.85


def test_coverage_of_known_geometries() -> None:
    params = np.array(
        [
            [1.0, 1.0, 0.0, 0.0],  # the same frame
            [2.0, 2.0, 0.0, 0.0],  # a shows the middle half of b's side
            [1.0, 1.0, 1.0, 0.0],  # shifted by half a side
            [1.0, 1.0, 2.0, 0.0],  # side by side
        ]
    )
    np.testing.assert_allclose(coverage(params), [1.0, 0.25, 0.5, 0.0])


def test_copies_of_a_photo_are_linked_and_two_views_of_its_sky_are_not(china: np.ndarray) -> None:
    original = china[100:260, 200:360]
    sky, sky_moved = china[0:100, 0:100], china[0:100, 40:140]  # overlap: IoU 0.43
    copies = [
        jpeg(original, 60),
        shifted(original, 2, -2),
        np.ascontiguousarray(original[8:160, 0:152]),
        np.asarray(Image.fromarray(original).resize((136, 136))),
    ]
    found = features([original, sky, sky_moved, *copies])
    # the two sky crops correlate enough to be aligned: the fit is what tells them apart
    sky_correlation = shifted_correlation(found.thumbs[1:2], found.thumbs[2:3], 2)[0]
    assert sky_correlation >= CopyRule().min_correlation
    result = find_duplicates(found, CopyRule())
    linked = {(p.a, p.b) for p in result.pairs}
    assert {(0, 3), (0, 4), (0, 5), (0, 6)} <= linked  # (copies of one image link each other too)
    assert not {row for pair in linked for row in pair} & {1, 2}
    assert {p.method for p in result.pairs} == {"correlation"}
    assert result.keep.tolist() == [0, 1, 2]
