"""The probes over a feature index: kNN or linear results of every extractor, as ``ModelProbe``.

The classifiers themselves are pure functions on arrays (:mod:`~sslflow.evaluation.knn`,
:mod:`~sslflow.evaluation.linear`); this module feeds them each cached feature set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from sslflow.devices import compute_device
from sslflow.evaluation.config import LinearConfig
from sslflow.evaluation.features import FeatureSet
from sslflow.evaluation.index import FeatureIndex
from sslflow.evaluation.knn import DEFAULT_SETTINGS, weighted_knn
from sslflow.evaluation.linear import (
    LinearProbeKind,
    LinearResult,
    logistic_regression_probe,
    sgd_probe,
)
from sslflow.evaluation.results import ModelProbe

log = logging.getLogger(__name__)


def num_classes(index: FeatureIndex, train: FeatureSet, test: FeatureSet) -> int:
    """The index's class count, else 1 + the largest label of either split."""
    return len(index.classes) or int(max(train.labels.max(), test.labels.max())) + 1


def knn_probe(
    index: FeatureIndex, settings: Sequence[tuple[int, float]] = DEFAULT_SETTINGS
) -> list[ModelProbe]:
    """Weighted kNN of every feature set in ``index``, one result per (k, T) in ``settings``."""
    probes = []
    for entry in index.entries:
        train, test = entry.load()
        started = time.perf_counter()
        results = weighted_knn(  # runs where the bank is: the GPU when there is one
            torch.from_numpy(np.array(train.features)).to(compute_device()),
            torch.from_numpy(train.labels),
            torch.from_numpy(np.array(test.features)),
            torch.from_numpy(test.labels),
            settings,
            num_classes=num_classes(index, train, test),
        )
        seconds = time.perf_counter() - started
        probes.append(
            ModelProbe(
                entry.role,
                entry.description,
                entry.fingerprint,
                entry.feature_dim,
                knn=results,
                seconds=seconds,
            )
        )
        log.info(
            "kNN %s: %s", entry.role.label, ", ".join(f"{r.name}={r.top1:.4f}" for r in results)
        )
    return probes


def _linear(
    kind: LinearProbeKind, train: FeatureSet, test: FeatureSet, config: LinearConfig, classes: int
) -> LinearResult:
    """One linear probe of ``kind`` on (N_train, D) train and (N_test, D) test features."""
    if kind is LinearProbeKind.LOGISTIC:
        return logistic_regression_probe(
            train.features,
            train.labels,
            test.features,
            test.labels,
            config.cs,
            config.validation_fraction,
            config.seed,
            num_classes=classes,
        )
    return sgd_probe(
        train.features,
        train.labels,
        test.features,
        test.labels,
        config.lrs,
        config.sgd_epochs,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
        num_classes=classes,
    )


def linear_probe(index: FeatureIndex, config: LinearConfig | None = None) -> list[ModelProbe]:
    """The configured linear probes (default ``LinearConfig()``) of every set in ``index``."""
    config = config or LinearConfig()
    probes = []
    for entry in index.entries:
        train, test = entry.load()
        classes = num_classes(index, train, test)
        started = time.perf_counter()
        results = [_linear(kind, train, test, config, classes) for kind in config.kinds()]
        seconds = time.perf_counter() - started
        probes.append(
            ModelProbe(
                entry.role,
                entry.description,
                entry.fingerprint,
                entry.feature_dim,
                linear=results,
                seconds=seconds,
            )
        )
        log.info(
            "linear %s: %s",
            entry.role.label,
            ", ".join(f"{r.kind.value}={r.top1:.4f}" for r in results),
        )
    return probes
