"""What the shard writer stores for one image: its own bytes, a PNG of its pixels, or a
downscaled JPEG, decoding it once so that unreadable files are caught at ingest."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from sslflow.data.geometry import unified_mode
from sslflow.data.samples import EncodedImage

if TYPE_CHECKING:
    from sslflow.data.writer import WriterConfig


# What a decode failure of a source file raises; the writer skips such a sample and counts it.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


# Modes whose encoded bytes are stored as they are; any other is converted to RGB explicitly.
KEPT_MODES = frozenset({"L", "RGB"})


@dataclass(frozen=True)
class StoredImage:
    """The bytes written for one image, with the geometry the manifest records."""

    ext: str
    data: bytes
    mode: str
    width: int
    height: int
    original_mode: str
    original_size: tuple[int, int]


def _downscaled(image: Image.Image, config: WriterConfig) -> StoredImage:
    """Longer side to ``max_side`` (aspect kept, EXIF orientation applied), as JPEG.

    ``draft`` lets the JPEG decoder decode at 1/2, 1/4 or 1/8 scale when that still covers the
    target, so a 12-megapixel photo is never decoded at full size.
    """
    original = (image.mode, image.size)  # before draft, which shrinks ``image.size``
    scale = config.max_side / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    mode = unified_mode(image.mode)
    if image.format == "JPEG":
        image.draft(mode, target)
    upright = ImageOps.exif_transpose(image).convert(mode)
    if upright.size != image.size:  # rotated by EXIF: the target turns with it
        target = target[::-1]
    resized = upright.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=config.jpeg_quality)
    return StoredImage("jpg", buffer.getvalue(), mode, *target, *original)


def _png(
    image: Image.Image, mode: str, config: WriterConfig, original: tuple[str, tuple[int, int]]
) -> StoredImage:
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG", compress_level=config.png_compress_level)
    return StoredImage("png", buffer.getvalue(), mode, *image.size, *original)


def stored_image(image: Image.Image | EncodedImage, config: WriterConfig) -> StoredImage:
    """What is written for ``image``, decoding it once: its own bytes when its mode is L or RGB
    and it fits ``max_side``, a downscaled JPEG when it does not fit, else an RGB (or L) PNG.

    Encoded bytes are fully decoded, so a truncated or corrupt file is skipped at ingest rather
    than failing a training run later.

    Raises:
        One of ``UNREADABLE`` when the image cannot be decoded.
    """
    too_big = config.max_side > 0
    if isinstance(image, EncodedImage):
        with Image.open(io.BytesIO(image.data)) as opened:
            original = (opened.mode, opened.size)
            if too_big and max(opened.size) > config.max_side:
                return _downscaled(opened, config)
            opened.load()
            if opened.mode in KEPT_MODES:
                return StoredImage(image.ext, image.data, opened.mode, *opened.size, *original)
            return _png(opened, unified_mode(opened.mode), config, original)
    original = (image.mode, image.size)
    if too_big and max(image.size) > config.max_side:
        return _downscaled(image, config)
    return _png(
        image,
        image.mode if image.mode in KEPT_MODES else unified_mode(image.mode),
        config,
        original,
    )
