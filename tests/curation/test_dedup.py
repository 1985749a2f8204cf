"""Copy detection on real images with planted copies: Fashion-MNIST (28 px) and photo crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photo_folder import sample_photos
from planted_copies import jpeg, shifted
from sslflow.curation.build import DedupConfig, DedupSummary, EvalCopies, remove_copies
from sslflow.curation.dedup import CopyRule, find_copies_of, find_duplicates
from sslflow.curation.fingerprints import CopyFeatures, fingerprint_shards
from sslflow.data import write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist


def tensors(images: list[np.ndarray]) -> list[torch.Tensor]:
    """uint8 (H, W) or (H, W, 3) arrays → (C, H, W) tensors, as the shard reader decodes them."""
    return [
        torch.from_numpy(np.array(i[None] if i.ndim == 2 else i.transpose(2, 0, 1))) for i in images
    ]


@pytest.fixture(scope="module")
def fashion_with_copies() -> tuple[list[np.ndarray], np.ndarray, int]:
    """3,000 distinct Fashion-MNIST images, then 300 planted copies of seeded originals (exact,
    noise ±3, 1 px shift, 2 px shift, JPEG q75, in turn)."""
    source = fashion_mnist(split="train")
    rng = np.random.default_rng(0)
    originals = list(source.images[rng.choice(len(source.images), 3000, replace=False)])
    of = rng.choice(len(originals), 300, replace=False)
    copies = []
    for number, row in enumerate(of):
        image = originals[row]
        kind = number % 5
        if kind == 0:
            copies.append(image.copy())
        elif kind == 1:
            noise = rng.integers(-3, 4, image.shape)
            copies.append(np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8))
        elif kind == 2:
            copies.append(shifted(image, 1, 0))
        elif kind == 3:
            copies.append(shifted(image, 2, -2))
        else:
            copies.append(jpeg(image, 75))
    return originals + copies, of, len(originals)


def test_planted_copies_of_small_images_are_found_and_distinct_images_kept(
    fashion_with_copies: tuple[list[np.ndarray], np.ndarray, int],
) -> None:
    images, of, n = fashion_with_copies
    result = find_duplicates(CopyFeatures.of_images(tensors(images)), CopyRule())
    linked = {(p.a, p.b) for p in result.pairs}
    found = np.array([(int(row), n + i) in linked for i, row in enumerate(of)])
    assert found.mean() >= 0.95
    assert found[::5].all()  # exact copies
    assert {p.method for p in result.pairs if p.b >= n and p.b % 5 == n % 5} <= {"exact"}
    distinct_linked = {r for p in result.pairs if p.b < n for r in (p.a, p.b)}
    assert len(distinct_linked) / n <= 0.01
    assert not np.isin(n + np.flatnonzero(found), result.keep).any()
    assert result.removed["all"] == len(images) - len(result.keep)
    assert result.removed["all"] == sum(
        result.removed[m] for m in ("exact", "pixels", "correlation")
    )
    assert result.removed["exact"] == 60 and result.removed["pixels"] >= 0.9 * 240


def photo_crops(count: int, seed: int) -> list[np.ndarray]:
    """Crops (64–200 px) of the bundled photos, a different photo for consecutive crops."""
    rng = np.random.default_rng(seed)
    photos = list(sample_photos().values())
    crops = []
    for number in range(count):
        photo = photos[number % len(photos)]
        side = int(rng.integers(64, 200))
        top = int(rng.integers(0, photo.shape[0] - side))
        left = int(rng.integers(0, photo.shape[1] - side))
        crops.append(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    return crops


def test_planted_copies_of_photos_are_found() -> None:
    crops = photo_crops(40, seed=1)
    originals = crops[:4]
    planted = [
        jpeg(originals[0], 60),
        np.asarray(Image.fromarray(originals[1]).resize((150, 150))),
        jpeg(np.asarray(Image.fromarray(originals[2]).resize((170, 170))), 75),
        originals[3].copy(),
    ]
    images = crops + planted
    result = find_duplicates(CopyFeatures.of_images(tensors(images)), CopyRule())
    linked = {(p.a, p.b): p.method for p in result.pairs}
    for number in range(4):
        assert (number, len(crops) + number) in linked
    assert linked[(3, len(crops) + 3)] == "exact"
    assert {linked[(n, len(crops) + n)] for n in range(3)} == {"correlation"}
    assert len(result.keep) == len(crops)


def test_copies_of_evaluation_images_are_found_in_the_pool(
    fashion_with_copies: tuple[list[np.ndarray], np.ndarray, int],
) -> None:
    images, _, _ = fashion_with_copies
    evaluation = fashion_mnist(split="test").images[:200]
    pool = images[:500] + [shifted(evaluation[7], 1, 1), evaluation[9].copy()]
    pairs = find_copies_of(
        CopyFeatures.of_images(tensors(pool)),
        CopyFeatures.of_images(tensors(list(evaluation))),
        CopyRule(),
    )
    assert {(p.a, p.b) for p in pairs} >= {(500, 7), (501, 9)}
    assert {p.a for p in pairs} <= {500, 501} | set(range(500))
    assert len({p.a for p in pairs if p.a < 500}) <= 5  # distinct train images rarely match


def test_fingerprints_of_shards_follow_the_manifest_and_are_reused(tmp_path: Path) -> None:
    crops = photo_crops(6, seed=2)
    grey = [crop.mean(axis=2).astype(np.uint8)[:28, :28] for crop in crops[:3]]
    images = np.stack([np.asarray(Image.fromarray(c).resize((40, 40))) for c in crops])
    source = ArraySource("photos", images, None, "p", {"test": "fingerprints"}, None)
    manifest = write_shards(source, tmp_path / "shards", shard_size=4, progress=False)
    found = fingerprint_shards(manifest, tmp_path / "fp", progress=False)
    features = found.features()
    assert found.keys() == [f"p-{i:06d}" for i in range(6)]
    expected = CopyFeatures.of_images(tensors(list(images)))
    np.testing.assert_array_equal(features.thumbs, expected.thumbs)
    np.testing.assert_array_equal(features.digests, expected.digests)
    assert not features.small.any()
    assert CopyFeatures.of_images(tensors(grey)).small.all()
    stamp = (tmp_path / "fp" / "thumbs.npy").stat().st_mtime_ns
    fingerprint_shards(manifest, tmp_path / "fp", progress=False)
    assert (tmp_path / "fp" / "thumbs.npy").stat().st_mtime_ns == stamp


def test_remove_copies_decontaminates_then_deduplicates_and_summary_round_trips(
    tmp_path: Path,
) -> None:
    evaluation = list(fashion_mnist(split="test").images[:100])
    pool = list(fashion_mnist(split="train").images[:300])
    pool += [pool[5].copy(), shifted(pool[6], 1, 0), evaluation[3].copy(), jpeg(evaluation[4], 75)]
    keys = [f"pool-{i}" for i in range(len(pool))]
    rows, summary = remove_copies(
        CopyFeatures.of_images(tensors(pool)),
        keys,
        DedupConfig(),
        EvalCopies(
            CopyFeatures.of_images(tensors(evaluation)), [f"eval-{i}" for i in range(100)], "x"
        ),
    )
    assert rows is not None and not np.isin([300, 301, 302, 303], rows).any()
    assert summary.contaminated_removed >= 2 and summary.duplicates_removed >= 2
    assert ("pool-302", "eval-3", "exact", 0.0) in summary.contaminated
    assert {("pool-5", "pool-300"), ("pool-6", "pool-301")} <= {
        (a, b) for a, b, _, _ in summary.pairs
    }
    assert summary.removed_by_method["exact"] >= 1 and summary.removed_by_method["pixels"] >= 1
    assert len(rows) == len(pool) - summary.contaminated_removed - summary.duplicates_removed
    summary.save(tmp_path)
    assert DedupSummary.load(tmp_path) == summary
    off, nothing = remove_copies(None, keys, DedupConfig(enabled=False))
    assert off is None and nothing == DedupSummary()
