"""Copies planted into test and benchmark pools: shifted and JPEG re-encoded versions of an image.

from planted_copies import jpeg, shifted
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` moved by (dx, dy) px; the uncovered strip is black, content pushed off is lost."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` saved as a JPEG of ``quality`` and decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
