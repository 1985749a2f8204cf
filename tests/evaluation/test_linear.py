"""Linear probes on synthetic features whose best hyper-parameter is known."""

from __future__ import annotations

import numpy as np
import pytest

from sslflow.evaluation.linear import (
    HyperParameter,
    LinearProbeKind,
    logistic_regression_probe,
    sgd_probe,
    validation_split,
)


def separable(n: int, seed: int, classes: int = 3, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs 10 σ apart along separate axes: linearly separable with a wide margin."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, dim))
    features[np.arange(n), labels] += 10.0
    return features.astype(np.float32), labels


def test_validation_split_is_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), 25)
    split = validation_split(labels, 0.1, seed=3)
    assert len(split.validation) == 10 and len(split.fit) == 90
    assert not set(split.fit) & set(split.validation)
    assert np.array_equal(split.validation, validation_split(labels, 0.1, seed=3).validation)
    assert set(labels[split.validation]) == {0, 1, 2, 3}  # stratified: every class held out


def test_logistic_regression_separable_data() -> None:
    train_x, train_y = separable(300, 0)
    test_x, test_y = separable(100, 1)
    result = logistic_regression_probe(
        train_x, train_y, test_x, test_y, cs=(1e-5, 1e-2, 1.0, 100.0)
    )
    assert result.kind is LinearProbeKind.LOGISTIC and result.hyperparameter is HyperParameter.C
    assert result.top1 == 1.0
    # C=1e-5 regularises so hard every class gets nearly equal logits; any C ≥ 1e-2 separates.
    assert result.sweep[1e-5] < result.sweep[result.chosen] == 1.0
    assert result.chosen >= 1e-2
    assert result.confusion.shape == (3, 3) and result.confusion.sum() == 100
    np.testing.assert_allclose(result.per_class_accuracy, 1.0)


def test_logistic_regression_regularises_noisy_features() -> None:
    # One informative dimension (classes ±1.5 σ apart) among 400 of pure noise, 700 fit
    # samples: C=1e4 is nearly unregularised and fits the noise; C=1e-2 does not.
    rng = np.random.default_rng(0)

    def noisy(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        features = rng.normal(size=(n, 400))
        features[:, 0] += 1.5 * (2 * labels - 1)
        return features, labels

    (train_x, train_y), (test_x, test_y) = noisy(1000), noisy(500)
    result = logistic_regression_probe(
        train_x, train_y, test_x, test_y, cs=(1e-3, 1e-2, 1e4), validation_fraction=0.3
    )
    assert result.chosen == 1e-2
    assert result.sweep[1e4] < result.sweep[1e-2]
    assert result.top1 > 0.85


def test_sgd_probe_picks_the_learning_rate_that_trains() -> None:
    train_x, train_y = separable(400, 0, classes=4)
    test_x, test_y = separable(100, 1, classes=4)
    # lr=1e-7 cannot move the heads from their near-zero initialisation in 5 epochs.
    result = sgd_probe(train_x, train_y, test_x, test_y, lrs=(1e-7, 0.1), epochs=5, batch_size=32)
    assert result.kind is LinearProbeKind.SGD and result.hyperparameter is HyperParameter.LR
    assert result.chosen == 0.1
    assert result.sweep[0.1] == 1.0 and result.sweep[1e-7] < 0.9
    assert result.top1 == 1.0
    assert result.predictions.shape == (100,)


def test_single_class_is_an_error() -> None:
    features = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="at least two classes"):
        logistic_regression_probe(features, np.zeros(20, int), features, np.zeros(20, int))
