"""Weighted kNN against a brute-force reference and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslflow.evaluation.knn import find_result, weighted_knn


def brute_force_knn(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    k: int,
    temperature: float,
    classes: int,
) -> np.ndarray:
    """(N_test, C) class ranking by a per-sample float64 loop: the definition, written plainly."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    rankings = []
    for query in test / np.linalg.norm(test, axis=1, keepdims=True):
        similarity = train @ query
        nearest = np.argsort(-similarity, kind="stable")[:k]
        scores = np.zeros(classes)
        for index in nearest:
            scores[train_labels[index]] += math.exp(similarity[index] / temperature)
        rankings.append(sorted(range(classes), key=lambda c: (-scores[c], c)))
    return np.array(rankings)


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_matches_brute_force_reference(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    classes = 6
    train, test = rng.normal(size=(120, 16)), rng.normal(size=(45, 16))
    train_labels, test_labels = rng.integers(0, classes, 120), rng.integers(0, classes, 45)
    settings = [(1, 0.07), (5, 0.07), (20, 0.5), (50, 0.1)]
    results = weighted_knn(
        torch.tensor(train),
        torch.tensor(train_labels),
        torch.tensor(test),
        torch.tensor(test_labels),
        settings,
        num_classes=classes,
        chunk_size=chunk_size,
    )
    for result, (k, temperature) in zip(results, settings):
        ranking = brute_force_knn(train, train_labels, test, k, temperature, classes)
        np.testing.assert_array_equal(result.predictions, ranking[:, 0])
        assert result.top1 == pytest.approx(np.mean(ranking[:, 0] == test_labels))
        assert result.top5 == pytest.approx(
            np.mean((ranking[:, :5] == test_labels[:, None]).any(axis=1))
        )
        assert result.k == k and result.temperature == temperature


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Query (1, 0). Class 0: one neighbour at cosine 1.0 (and a far one at -1);
    # class 1: two neighbours at cosine 0.5.
    half = math.sqrt(0.75)
    train = torch.tensor([[1.0, 0.0], [0.5, half], [0.5, -half], [-1.0, 0.0]])
    return train, torch.tensor([0, 1, 1, 0]), torch.tensor([[2.0, 0.0]])


def test_exp_weighting_decides_against_majority() -> None:
    train, labels, query = _hand_case()
    # T=0.1: class 0 scores e^10 ≈ 22026 > class 1's 2·e^5 ≈ 297, although class 1 has more votes.
    # T=1: class 0 scores e^1 ≈ 2.72 < class 1's 2·e^0.5 ≈ 3.30.
    sharp, flat = weighted_knn(train, labels, query, torch.tensor([0]), [(3, 0.1), (3, 1.0)])
    assert sharp.predictions.tolist() == [0] and sharp.top1 == 1.0
    assert flat.predictions.tolist() == [1] and flat.top1 == 0.0
    assert flat.top5 == 1.0  # two classes: the label is always within the top five


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_equal_scores_go_to_lower_class(order: list[int]) -> None:
    # The query is equidistant from both train points, so both classes score e^(cos/T) exactly.
    train = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    result = weighted_knn(
        train, torch.tensor(order), torch.tensor([[1.0, 0.0]]), torch.tensor([1]), [(2, 0.07)]
    )[0]
    assert result.predictions.tolist() == [0]


def test_k_larger_than_train_is_clipped_with_warning() -> None:
    train, labels, query = _hand_case()
    with pytest.warns(UserWarning, match="k=200 exceeds the 4 train samples"):
        results = weighted_knn(train, labels, query, torch.tensor([0]), [(200, 0.1), (2, 0.1)])
    assert (results[0].k, results[0].k_requested) == (4, 200)
    assert find_result(results, 200, 0.1) is results[0]


def test_single_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least two classes"):
        weighted_knn(
            torch.randn(5, 3), torch.zeros(5, dtype=torch.int64), torch.randn(2, 3), torch.zeros(2)
        )


def test_dimension_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        weighted_knn(
            torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 0]), torch.randn(2, 4), torch.zeros(2)
        )
