"""A built hierarchy on disk: its layout and its lazy reader (no k-means here).

Storage (``<root>/``): ``config.json``, ``rows.npy`` (embedding row of each level-0 point) and per
level ``level_NN/``: ``centroids.npy`` (K, D) float32, ``assignments.npy`` (n,) int32,
``distances.npy`` (n,) float32 squared distances, ``clusters_offsets.npy`` (K+1,) int64 and
``clusters_members.npy`` (n,) int64 (CSR: members of cluster c are
``members[offsets[c]:offsets[c+1]]``, sorted by distance to the centroid), ``steps/step_SSS.npy``
(centroids after each step, for resuming) and ``stats.json`` (written last: its presence marks the
level complete). Nothing is pickled. A run stopped anywhere resumes from the last completed
level and, inside a level, from the last completed step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.curation.storage import load_json, load_npy


class HierarchyError(ValueError):
    """A hierarchy cannot be built from this input; the message says what to change."""


@dataclass
class Hierarchy:
    """A built hierarchy on disk; arrays are read lazily from ``root``."""

    root: Path
    config: dict[str, Any]
    stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_levels(self) -> int:
        return len(self.config["levels"])

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def geometry(self) -> str:
        """``cosine`` (spherical k-means on L2-normalised rows) or ``euclidean``."""
        return "cosine" if self.config.get("spherical") else "euclidean"

    def level_dir(self, level: int) -> Path:
        return self.root / f"level_{level:02d}"

    def rows(self) -> np.ndarray:
        """(N0,) int64: embedding row of each level-0 point."""
        return load_npy(self.root / "rows.npy")

    def centroids(self, level: int) -> np.ndarray:
        return load_npy(self.level_dir(level) / "centroids.npy")

    def assignments(self, level: int) -> np.ndarray:
        return load_npy(self.level_dir(level) / "assignments.npy")

    def distances(self, level: int) -> np.ndarray:
        return load_npy(self.level_dir(level) / "distances.npy")

    def clusters(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets (K+1,), members (n,)): members sorted by distance to their centroid."""
        folder = self.level_dir(level)
        return load_npy(folder / "clusters_offsets.npy"), load_npy(folder / "clusters_members.npy")

    def leaf_paths(self) -> np.ndarray:
        """(K0, L) int32: for each level-0 cluster its cluster at every level (column = level)."""
        paths = [np.arange(len(self.centroids(0)), dtype=np.int32)]
        for level in range(1, self.n_levels):
            paths.append(self.assignments(level)[paths[-1]])
        return np.stack(paths, axis=1)


def load_hierarchy(root: str | Path) -> Hierarchy:
    """Open a complete hierarchy; fails naming the first missing level."""
    root = Path(root)
    if not (root / "config.json").is_file():
        raise HierarchyError(f"no hierarchy at {root}: config.json is missing")
    config = load_json(root / "config.json")
    stats = []
    for level in range(len(config["levels"])):
        path = root / f"level_{level:02d}" / "stats.json"
        if not path.is_file():
            raise HierarchyError(
                f"hierarchy at {root} is incomplete: level {level} has no stats.json"
            )
        stats.append(load_json(path))
    return Hierarchy(root=root, config=config, stats=stats)
