"""The feature index of one probing run: which cached feature sets belong to it.

:func:`extract_all` extracts (or reuses) train and test features of the model and its
baselines through :func:`~sslflow.evaluation.features.extract_features`, the one shared
extraction helper, and records where they are, so every probe reads the same features.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sslflow.data import Manifest
from sslflow.evaluation.config import FeatureConfig
from sslflow.evaluation.features import FeatureSet, RawPixels, extract_features, load_feature_set
from sslflow.evaluation.resolve import RANDOM_PREFIX, ResolvedModel, random_copy
from sslflow.evaluation.results import Role
from sslflow.models import Embedder


@dataclass(frozen=True)
class FeatureEntry:
    """Where one extractor's cached train and test features are.

    Attributes:
        role: model or baseline.
        description: what was embedded (the model spec, ``random <name>``, ``raw pixels``).
        fingerprint: the embedder's fingerprint (the cache key).
        feature_dim: width D of its features.
        train: cache folder of the (N_train, D) train features.
        test: cache folder of the (N_test, D) test features.
    """

    role: Role
    description: str
    fingerprint: str
    feature_dim: int
    train: str
    test: str

    def load(self) -> tuple[FeatureSet, FeatureSet]:
        return load_feature_set(self.train), load_feature_set(self.test)


@dataclass
class FeatureIndex:
    """The feature sets of one probing run: the model first, then the baselines."""

    entries: list[FeatureEntry]
    classes: list[str]
    train_content_hash: str
    test_content_hash: str
    extract_seconds: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        """Write the index as JSON (temporary name, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        body = asdict(self)
        body["entries"] = [{**asdict(e), "role": e.role.value} for e in self.entries]
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(body, indent=2))
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> FeatureIndex:
        if not path.is_file():
            raise FileNotFoundError(f"no feature index at {path} (written by FeatureIndex.save)")
        body = json.loads(path.read_text())
        body["entries"] = [FeatureEntry(**{**e, "role": Role(e["role"])}) for e in body["entries"]]
        return cls(**body)

    def model(self) -> FeatureEntry:
        return self.entries[0]

    def metrics(self) -> dict[str, float]:
        """``<role>.feature_dim`` and ``<role>.extract_seconds`` of every extractor."""
        return {
            **{f"{e.role.value}.feature_dim": e.feature_dim for e in self.entries},
            **{f"{role}.extract_seconds": s for role, s in self.extract_seconds.items()},
        }

    def digest(self) -> str:
        """sha256 of every extractor's fingerprint and both shard sets' content hashes.

        Changes exactly when the features would: a new model, baseline or shard set.
        """
        return hashlib.sha256(
            "".join(e.fingerprint for e in self.entries).encode()
            + (self.train_content_hash + self.test_content_hash).encode()
        ).hexdigest()


def extractors(
    model: ResolvedModel, baselines: bool, pixels: RawPixels, seed: int = 0
) -> list[tuple[Role, Embedder, str, int | None]]:
    """(role, embedder, description, feature width) for the model and, if asked, the baselines."""
    backbone = model.backbone
    found: list[tuple[Role, Embedder, str, int | None]] = [
        (Role.MODEL, backbone, model.spec, backbone.feature_dim)
    ]
    if baselines:
        if not model.spec.startswith(RANDOM_PREFIX):
            found.append(
                (
                    Role.RANDOM_INIT,
                    random_copy(backbone, seed),
                    f"random {backbone.name}",
                    backbone.feature_dim,
                )
            )
        found.append((Role.RAW_PIXELS, pixels, f"raw pixels ({pixels.size}×{pixels.size})", None))
    return found


def extract_all(
    model: ResolvedModel,
    train: Manifest,
    test: Manifest,
    cache_root: Path,
    config: FeatureConfig | None = None,
) -> FeatureIndex:
    """Extract (or reuse cached) train and test features of the model and its baselines.

    Raises:
        UnlabelledShardsError: a shard set carries no labels.
        ValueError: train and test name different classes.
    """
    if train.classes and test.classes and train.classes != test.classes:
        raise ValueError(
            f"train and test shards name different classes: {train.classes} vs {test.classes}"
        )
    config = config or FeatureConfig()
    entries, seconds = [], {}
    pixels = RawPixels.for_images(train)
    for role, embedder, description, dim in extractors(
        model, config.baselines, pixels, config.seed
    ):
        started = time.perf_counter()
        sets = [
            extract_features(
                embedder, manifest, cache_root, split, config.batch_size, config.num_workers, dim
            )
            for split, manifest in (("train", train), ("test", test))
        ]
        seconds[role.value] = time.perf_counter() - started
        entries.append(
            FeatureEntry(
                role,
                description,
                sets[0].fingerprint,
                sets[0].dim,
                str(sets[0].root),
                str(sets[1].root),
            )
        )
    classes = list(train.classes or test.classes or [])
    return FeatureIndex(entries, classes, train.content_hash, test.content_hash, seconds)
