"""Labelled folders of real photo crops, for tests and benchmarks of the image-folder path.

The photos are the ones that ship inside scikit-learn (``load_sample_images``: china.jpg and
flower.jpg, 427×640 RGB) plus, when scikit-image is importable, its bundled photos (astronaut,
coffee, chelsea, rocket, ...). Nothing is downloaded.

Each photo is cut into three regions (left, middle and right third); each region is a class
``<photo>-<region>``, so even with scikit-learn's two photos there are six classes. Crops of
random size, aspect and position inside a region are saved as a mix of JPEG and PNG, with a few
awkward files on purpose: grey ("L") images, a CMYK JPEG and JPEGs whose pixels are stored
rotated with an EXIF Orientation tag, as phones write them.

    from photo_folder import build_photo_folder
    folder = build_photo_folder(tmp_path / "photos", per_class=5)
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REGIONS = ("left", "middle", "right")
EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # the stored pixels must be turned 90° clockwise to be upright
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
JPEG_QUALITY = 90
TRAIN_FRACTION = 0.75


@dataclass(frozen=True)
class PhotoFolder:
    """What :func:`build_photo_folder` wrote.

    Attributes:
        root: the folder (``root/<class>/<name>.jpg|png``, or ``root/train|test/<class>/...``).
        classes: class names, sorted (the order the image-folder source labels them in).
        files: every file written, sorted by path.
        sizes: ``(width, height)`` of each file in ``files`` as an EXIF-aware reader sees it
            (upright; for the EXIF-rotated files the stored pixels are ``(height, width)``).
        modes: number of files saved in each PIL mode (``RGB``, ``L``, ``CMYK``).
        exif_rotated: the JPEG files stored rotated with EXIF Orientation 6, sorted.
    """

    root: Path
    classes: list[str]
    files: list[Path]
    sizes: list[tuple[int, int]]
    modes: dict[str, int]
    exif_rotated: list[Path]


def _sklearn_photos() -> dict[str, np.ndarray]:
    """scikit-learn's sample images, read from its package data (importing sklearn.datasets
    takes seconds); ``load_sample_images`` when the files are not where they usually are."""
    spec = importlib.util.find_spec("sklearn")
    folders = (
        [Path(p) / "datasets" / "images" for p in (spec.submodule_search_locations or [])]
        if spec
        else []
    )
    files = sorted(f for folder in folders for f in folder.glob("*.jpg"))
    if files:
        photos = {}
        for path in files:
            with Image.open(path) as image:
                photos[path.stem] = np.asarray(image.convert("RGB"))
        return photos
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {
        Path(name).stem: np.asarray(image) for name, image in zip(bunch.filenames, bunch.images)
    }


@functools.lru_cache(maxsize=1)
def sample_photos() -> dict[str, np.ndarray]:
    """The bundled photos as read-only uint8 (H, W, 3) arrays, by name: scikit-learn's, then
    scikit-image's (when importable). Cached: callers must not modify them."""
    photos = _sklearn_photos()
    try:
        from skimage import data
    except ImportError:
        return photos
    for name in SKIMAGE_PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001, S112 - a photo missing from this scikit-image build (or needing pooch)
            continue
        if image.ndim == 3 and image.shape[2] >= 3 and image.dtype == np.uint8:
            photos[name] = np.ascontiguousarray(image[..., :3])
    for image in photos.values():
        image.setflags(write=False)
    return photos


def photo_classes(
    grid: tuple[int, int] = (1, 3), photos: dict[str, np.ndarray] | None = None
) -> list[str]:
    """The class names :func:`build_photo_folder` writes with the photos available here, sorted."""
    return sorted(_regions(photos or sample_photos(), grid))


def _regions(
    photos: dict[str, np.ndarray], grid: tuple[int, int] = (1, 3)
) -> dict[str, np.ndarray]:
    """Class name → a tile of a photo (views, no copies).

    The default grid (1 row, 3 columns) gives ``<photo>-left|middle|right``; any other grid
    gives ``<photo>-r<row>c<column>``.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid needs ≥ 1 row and column, got {grid}")
    regions = {}
    for name, image in photos.items():
        y = np.linspace(0, image.shape[0], rows + 1).round().astype(int)
        x = np.linspace(0, image.shape[1], cols + 1).round().astype(int)
        for row in range(rows):
            for col in range(cols):
                region = REGIONS[col] if grid == (1, 3) else f"r{row}c{col}"
                regions[f"{name}-{region}"] = image[y[row] : y[row + 1], x[col] : x[col + 1]]
    return regions


def _random_crop(
    region: np.ndarray, rng: np.random.Generator, min_side: int, max_side: int
) -> Image.Image:
    """A crop of random size (aspect 3:4..4:3) and position, optionally rescaled (≤ max_side)."""
    height, width = region.shape[:2]
    low = min(min_side, height, width)
    short = int(rng.integers(low, min(height, width) + 1))
    aspect = float(np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3))))  # width / height
    crop_w = min(width, max(1, round(short * aspect))) if aspect >= 1 else short
    crop_h = short if aspect >= 1 else min(height, max(1, round(short / aspect)))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = Image.fromarray(region[top : top + crop_h, left : left + crop_w])
    if rng.random() < 0.5:  # rescale: short side log-uniform in [min_side, max_side]
        target = float(np.exp(rng.uniform(math.log(min_side), math.log(max_side))))
        scale = min(target / min(crop_w, crop_h), max_side / max(crop_w, crop_h))
        new_size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
        crop = crop.resize(new_size, Image.Resampling.BILINEAR)
    elif max(crop_w, crop_h) > max_side:
        crop.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return crop


def _split_of(count: int, rng: np.random.Generator) -> list[str]:
    """``train``/``test`` for each of a class's ``count`` files: ~75/25, ≥ 1 test when count ≥ 2."""
    tests = 0 if count < 2 else max(1, round(count * (1 - TRAIN_FRACTION)))
    splits = ["train"] * (count - tests) + ["test"] * tests
    return [splits[i] for i in rng.permutation(count)]


def build_photo_folder(
    root: Path,
    per_class: int = 40,
    seed: int = 0,
    split: bool = False,
    grey: int = 3,
    cmyk: int = 1,
    exif_rotated: int = 2,
    min_side: int = 48,
    max_side: int = 400,
    grid: tuple[int, int] = (1, 3),
) -> PhotoFolder:
    """Write ``per_class`` photo crops per class under ``root`` (same seed → same files).

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        per_class: files per class.
        seed: seeds crops, formats and which files are grey, CMYK or EXIF-rotated.
        split: write ``root/train/<class>/`` and ``root/test/<class>/`` (~75/25 per class)
            instead of ``root/<class>/``.
        grey: files saved in mode L (JPEG or PNG).
        cmyk: files saved as CMYK JPEG.
        exif_rotated: RGB JPEG files stored rotated 90° with EXIF Orientation 6.
        min_side: smallest short side of a crop (less only when a region is smaller).
        max_side: largest long side of a (rescaled) crop.
        grid: rows × columns of tiles each photo is cut into, one class per tile; the default
            (1, 3) gives the classes ``<photo>-left|middle|right``. More tiles give more (and
            smaller) classes, e.g. for class-mix measurements.

    Returns:
        The :class:`PhotoFolder` describing the files.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be ≥ 1, got {per_class}")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"need 1 ≤ min_side ≤ max_side, got {min_side}, {max_side}")
    rng = np.random.default_rng(seed)
    regions = _regions(sample_photos(), grid)
    classes = sorted(regions)
    total = per_class * len(classes)
    special = grey + cmyk + exif_rotated
    if min(grey, cmyk, exif_rotated) < 0 or special > total:
        raise ValueError(f"grey + cmyk + exif_rotated = {special} must be ≥ 0 and ≤ {total} files")

    # Which files are special (disjoint), and a seeded coin for JPEG vs PNG.
    order = rng.permutation(total)
    kind = np.array(["rgb"] * total, dtype=object)
    kind[order[:grey]] = "grey"
    kind[order[grey : grey + cmyk]] = "cmyk"
    kind[order[grey + cmyk : special]] = "exif"
    jpeg = rng.random(total) < 0.5
    free = np.flatnonzero(kind == "rgb")
    if total >= 2 and free.size and (jpeg.all() or not jpeg.any()):
        jpeg[free[0]] = not jpeg[free[0]]  # both suffixes, whatever the coin said
    jpeg[kind == "cmyk"] = True
    jpeg[kind == "exif"] = True

    records: list[tuple[Path, tuple[int, int], str]] = []
    rotated: list[Path] = []
    index = 0
    for name in classes:
        splits = _split_of(per_class, rng) if split else [""] * per_class
        for number in range(per_class):
            crop = _random_crop(regions[name], rng, min_side, max_side)
            folder = root / splits[number] / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}-{number:04d}.{'jpg' if jpeg[index] else 'png'}"
            size = crop.size
            if kind[index] == "grey":
                crop = crop.convert("L")
            elif kind[index] == "cmyk":
                crop = crop.convert("CMYK")
            if kind[index] == "exif":
                exif = Image.Exif()
                exif[EXIF_ORIENTATION] = ROTATED_90_CW
                # Stored turned 90° counter-clockwise; Orientation 6 turns it back clockwise.
                stored = crop.transpose(Image.Transpose.ROTATE_90)
                stored.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
                rotated.append(path)
            elif jpeg[index]:
                crop.save(path, format="JPEG", quality=JPEG_QUALITY)
            else:
                crop.save(path, format="PNG", compress_level=1)
            records.append((path, size, crop.mode))
            index += 1

    records.sort(key=lambda record: record[0])
    return PhotoFolder(
        root=root,
        classes=classes,
        files=[record[0] for record in records],
        sizes=[record[1] for record in records],
        modes=dict(Counter(record[2] for record in records)),
        exif_rotated=sorted(rotated),
    )


def build_phone_photos(
    root: Path,
    count: int = 266,
    size: tuple[int, int] = (4000, 3000),
    seed: int = 0,
    classes: int = 2,
) -> list[Path]:
    """Write ``count`` large JPEGs (quality 90) like a phone's, for memory benchmarks.

    Each is a random crop of a sample photo with the aspect of ``size`` (width, height),
    upscaled to ``size`` with BILINEAR (~0.3 s per 12 MP file on one core, mostly the JPEG
    encoder). Files go to ``root/<class>/phone-<i>.jpg``, round-robin over the classes; a class
    is a photo (``china``, ``flower``, ...) or, when more classes than photos are asked for, a
    photo region (``china-left``, ...).

    Returns:
        The files written, in order.
    """
    photos = sample_photos()
    if classes <= len(photos):
        names = sorted(photos)[:classes]
        sources = {name: photos[name] for name in names}
    else:
        regions = _regions(photos)
        if classes > len(regions):
            raise ValueError(
                f"at most {len(regions)} classes from {len(photos)} photos, got {classes}"
            )
        names = sorted(regions)[:classes]
        sources = {name: regions[name] for name in names}
    rng = np.random.default_rng(seed)
    width, height = size
    files = []
    for index in range(count):
        name = names[index % classes]
        image = sources[name]
        src_h, src_w = image.shape[:2]
        # The largest crop of the target aspect that fits, scaled by 40..100%.
        fit = min(src_w / width, src_h / height)
        scale = fit * float(rng.uniform(0.4, 1.0))
        crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
        top = int(rng.integers(0, src_h - crop_h + 1))
        left = int(rng.integers(0, src_w - crop_w + 1))
        crop = Image.fromarray(image[top : top + crop_h, left : left + crop_w])
        path = root / name / f"phone-{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.resize(size, Image.Resampling.BILINEAR).save(path, format="JPEG", quality=JPEG_QUALITY)
        files.append(path)
        if (index + 1) % 20 == 0 or index + 1 == count:
            print(f"phone photos: {index + 1}/{count} written to {root}", flush=True)
    return files
