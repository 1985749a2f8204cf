"""The photo-folder builder used by image-folder tests and benchmarks writes what it reports."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from photo_folder import EXIF_ORIENTATION, ROTATED_90_CW, build_photo_folder


def test_photo_folder_structure(tmp_path: Path) -> None:
    folder = build_photo_folder(tmp_path / "photos", per_class=5, seed=0)

    assert len(folder.classes) >= 6
    assert folder.classes == sorted(p.name for p in folder.root.iterdir())
    assert len(folder.files) == len(folder.sizes) == 5 * len(folder.classes)
    assert all(p.is_file() and p.parent.parent == folder.root for p in folder.files)
    assert {p.suffix for p in folder.files} == {".jpg", ".png"}
    assert folder.modes["L"] == 3 and folder.modes["CMYK"] == 1
    assert sum(folder.modes.values()) == len(folder.files)

    opened = {}
    for path, size in zip(folder.files, folder.sizes):
        with Image.open(path) as image:
            opened[path] = image.mode
            upright = ImageOps.exif_transpose(image)
            assert upright.size == size
            if path in folder.exif_rotated:
                assert image.format == "JPEG" and image.mode == "RGB"
                assert image.getexif()[EXIF_ORIENTATION] == ROTATED_90_CW
                assert image.size == (size[1], size[0])
            else:
                assert EXIF_ORIENTATION not in image.getexif()
    assert sum(mode == "L" for mode in opened.values()) == 3
    cmyk = [p for p, mode in opened.items() if mode == "CMYK"]
    assert len(cmyk) == 1 and cmyk[0].suffix == ".jpg"
    assert len(folder.exif_rotated) == 2

    widths = [w for w, _ in folder.sizes]
    assert max(widths) >= 2 * min(widths) and min(min(s) for s in folder.sizes) >= 48
    assert max(max(s) for s in folder.sizes) <= 400

    again = build_photo_folder(tmp_path / "again", per_class=5, seed=0)
    assert again.sizes == folder.sizes and again.modes == folder.modes


def test_photo_folder_split(tmp_path: Path) -> None:
    folder = build_photo_folder(
        tmp_path / "split", per_class=4, split=True, grey=0, cmyk=0, exif_rotated=0
    )

    train = [p for p in folder.files if p.relative_to(folder.root).parts[0] == "train"]
    test = [p for p in folder.files if p.relative_to(folder.root).parts[0] == "test"]
    assert len(train) == 3 * len(folder.classes) and len(test) == len(folder.classes)
    assert sorted(p.name for p in (folder.root / "test").iterdir()) == folder.classes
    assert folder.modes == {"RGB": len(folder.files)}
