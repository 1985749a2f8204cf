"""What the images of a shard set look like: colour modes and sizes, recorded at ingest.

Every downstream default that depends on the images (crop size, channels, colour mode) is
``auto`` and resolved from this record, so a folder of photos and Fashion-MNIST need no
geometry settings. A shard set of mixed modes is read in one mode: RGB when any image is in
colour, grey (one channel) otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
AUTO = "auto"
# Largest side ``auto`` picks for backbones (the usual ImageNet crop) and for raw pixels.
BACKBONE_SIDE_CAP = 224
PIXELS_SIDE_CAP = 32
# ``auto`` sizes follow the 5th percentile of the shorter side: a few tiny outliers are
# upsampled (with a warning) instead of shrinking every other image to their size.
AUTO_QUANTILE = 0.05


def unified_mode(mode: str) -> str:
    """``L`` for grey PIL modes, ``RGB`` for everything else (CMYK, P, RGBA, YCbCr ...)."""
    return "L" if mode in GREY_MODES else "RGB"


@dataclass
class ImageGeometry:
    """Colour modes and side lengths of a shard set's stored images, as histograms.

    Filled sample by sample while shards are written (``add``), merged across shards
    (``merge``) and saved in the manifest. Histograms of integer sides stay small: at most one
    entry per distinct side length.

    Attributes:
        modes: samples per unified mode (``L``, ``RGB``).
        short_sides: samples per shorter side length (px).
        long_sides: samples per longer side length (px).
    """

    modes: Counter[str] = field(default_factory=Counter)
    short_sides: Counter[int] = field(default_factory=Counter)
    long_sides: Counter[int] = field(default_factory=Counter)

    def add(self, mode: str, width: int, height: int) -> None:
        self.modes[unified_mode(mode)] += 1
        self.short_sides[min(width, height)] += 1
        self.long_sides[max(width, height)] += 1

    def merge(self, other: ImageGeometry) -> None:
        self.modes.update(other.modes)
        self.short_sides.update(other.short_sides)
        self.long_sides.update(other.long_sides)

    @property
    def samples(self) -> int:
        return sum(self.modes.values())

    @property
    def mode(self) -> str:
        """The one mode every reader converts to: RGB if any image is colour, else L."""
        return "RGB" if self.modes.get("RGB") else "L"

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    def short_side(self, q: float) -> int:
        """The ``q`` quantile (0 = smallest, 1 = largest) of the shorter sides."""
        return _quantile(self.short_sides, q)

    def image_size(self, cap: int = BACKBONE_SIDE_CAP) -> int:
        """``auto`` crop side: the 5th percentile of the shorter side, at most ``cap``."""
        return max(1, min(cap, self.short_side(AUTO_QUANTILE)))

    def smaller_than(self, side: int) -> int:
        """How many images have a shorter side below ``side`` (they would be upsampled)."""
        return sum(count for value, count in self.short_sides.items() if value < side)

    def describe(self) -> str:
        """One line for logs and errors: modes and shorter-side quantiles."""
        modes = ", ".join(f"{count} {mode}" for mode, count in sorted(self.modes.items()))
        return (
            f"{self.samples} images ({modes}); shorter side min {self.short_side(0)}, "
            f"5% {self.short_side(AUTO_QUANTILE)}, median {self.short_side(0.5)}, max "
            f"{self.short_side(1)} px"
        )

    def to_json(self) -> dict[str, Any]:
        """Histograms (JSON keys are strings) plus a summary a person can read."""
        return {
            "mode": self.mode,
            "modes": dict(sorted(self.modes.items())),
            "short_side": {
                "min": self.short_side(0),
                "p05": self.short_side(AUTO_QUANTILE),
                "median": self.short_side(0.5),
                "max": self.short_side(1),
            },
            "long_side_max": max(self.long_sides),
            "short_sides": {str(k): v for k, v in sorted(self.short_sides.items())},
            "long_sides": {str(k): v for k, v in sorted(self.long_sides.items())},
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ImageGeometry:
        return cls(
            Counter(body.get("modes", {})),
            Counter({int(k): v for k, v in body.get("short_sides", {}).items()}),
            Counter({int(k): v for k, v in body.get("long_sides", {}).items()}),
        )


def _quantile(histogram: Mapping[int, int], q: float) -> int:
    """The ``q`` quantile (lower) of a histogram of integers."""
    total = sum(histogram.values())
    if total == 0:
        raise ValueError("no images counted")
    rank = min(total - 1, int(q * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return value
    raise AssertionError("unreachable: rank < total")
