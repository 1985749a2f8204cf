"""Weighted k-nearest-neighbour probe on frozen features.

The classifier of InstDisc (Wu et al., 2018), also used by DINO, DINOv2 and lightly's
``knn_predict``: features are L2-normalised, neighbours ranked by cosine similarity, and each
of the top-k neighbours votes for its class with weight ``exp(sim / T)``.

Written here rather than taken from lightly because lightly's ``knn_predict`` handles one k
and one T per call on a full (B, N) similarity matrix; this version ranks neighbours once for
the largest k, derives every (k, T) from that ranking, and bounds memory by chunking test rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_KS = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07
# lightly's benchmark tables use k=200, T=0.1 (lightly/utils/benchmarking/knn.py).
LIGHTLY_SETTING = (200, 0.1)
DEFAULT_SETTINGS: tuple[tuple[int, float], ...] = (
    *((k, DEFAULT_TEMPERATURE) for k in DEFAULT_KS),
    LIGHTLY_SETTING,
)
TOP5 = 5


@dataclass
class KnnResult:
    """Accuracy of one (k, T) setting on the test features.

    Attributes:
        k: neighbours used (``k_requested`` clipped to the number of train samples).
        k_requested: the k that was asked for.
        temperature: T in the vote weight ``exp(sim / T)``.
        top1: fraction of test samples whose highest-scoring class is their label.
        top5: fraction whose label is among the five highest-scoring classes (all classes
            when there are fewer than five).
        predictions: (N_test,) int64 top-1 predicted class per test sample.
    """

    k: int
    k_requested: int
    temperature: float
    top1: float
    top5: float
    predictions: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        """Metric-friendly name, e.g. ``k20_t0.07``."""
        return f"k{self.k_requested}_t{self.temperature:g}"


def _check_inputs(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor
) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            f"kNN features must be 2-D (N, D); got train {tuple(train_features.shape)}, "
            f"test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test feature dimensions differ ({train_features.shape[1]} vs "
            f"{test_features.shape[1]}): both must come from the same model"
        )
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(
            f"train labels have shape {tuple(train_labels.shape)}, "
            f"expected ({train_features.shape[0]},)"
        )
    if train_features.shape[0] == 0:
        raise ValueError("kNN needs at least one train sample")
    if int(train_labels.min()) < 0:
        raise ValueError("train labels contain negative values (-1 marks an unlabelled sample)")
    if torch.unique(train_labels).numel() < 2:
        raise ValueError(
            f"kNN needs at least two classes in the train labels, found only class "
            f"{int(train_labels[0])}: accuracy would be meaningless"
        )


def _clip_settings(
    settings: Sequence[tuple[int, float]], train_size: int
) -> list[tuple[int, int, float]]:
    """(k_used, k_requested, T) per setting, clipping k to the train size with a warning."""
    clipped = []
    for k, temperature in settings:
        if k < 1 or temperature <= 0:
            raise ValueError(f"kNN needs k ≥ 1 and T > 0, got k={k}, T={temperature}")
        if k > train_size:
            warnings.warn(
                f"kNN k={k} exceeds the {train_size} train samples; using k={train_size}",
                UserWarning,
                stacklevel=3,
            )
        clipped.append((min(k, train_size), k, temperature))
    return clipped


def default_chunk_size(train_size: int, memory_bytes: int = 256 << 20) -> int:
    """Test rows per chunk so the (chunk, N_train) float32 similarities fit ``memory_bytes``."""
    return max(1, min(4096, memory_bytes // (4 * max(train_size, 1))))


def weighted_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    settings: Sequence[tuple[int, float]] = DEFAULT_SETTINGS,
    num_classes: int | None = None,
    chunk_size: int | None = None,
) -> list[KnnResult]:
    """Weighted kNN accuracy for several (k, T) settings in one pass over the test rows.

    For each chunk of test rows the (chunk, N_train) cosine-similarity block is computed once,
    the top ``max(k)`` neighbours are taken once, and every setting reuses the first k of them.
    A class's score is the sum of ``exp(sim / T)`` over its neighbours among the top k; classes
    with equal scores rank by lower class index. Neighbours tied in similarity at the k-th
    place are chosen by ``torch.topk`` (unspecified order), which only matters for exact
    duplicates of a test point's k-th neighbour.

    Args:
        train_features: (N_train, D) float features of the labelled bank; L2-normalised here.
            The computation runs on this tensor's device.
        train_labels: (N_train,) int64 class indices in ``[0, num_classes)``.
        test_features: (N_test, D) float features to classify; L2-normalised here.
        test_labels: (N_test,) int64 class indices.
        settings: (k, T) pairs; k larger than N_train is clipped with a ``UserWarning``.
        num_classes: number of classes C; defaults to ``max(label) + 1`` over both splits.
        chunk_size: test rows per similarity block; default keeps the block near 256 MiB.

    Returns:
        One ``KnnResult`` per setting, in the order given.

    Raises:
        ValueError: on mismatched shapes, negative labels, or fewer than two train classes.
    """
    train_labels = torch.as_tensor(train_labels, dtype=torch.int64)
    test_labels = torch.as_tensor(test_labels, dtype=torch.int64)
    train_features = torch.as_tensor(train_features)
    test_features = torch.as_tensor(test_features)
    _check_inputs(train_features, train_labels, test_features)
    clipped = _clip_settings(settings, train_features.shape[0])
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    k_max = max(k for k, _, _ in clipped)
    top = min(TOP5, classes)
    chunk = chunk_size or default_chunk_size(train_features.shape[0])

    device = train_features.device  # runs where the bank is (CPU, or GPU for large banks)
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    bank = F.normalize(train_features.float(), dim=1)
    hits1 = [0] * len(clipped)
    hits5 = [0] * len(clipped)
    predictions = [torch.empty(test_features.shape[0], dtype=torch.int64) for _ in clipped]
    for start in range(0, test_features.shape[0], chunk):
        queries = F.normalize(test_features[start : start + chunk].to(device).float(), dim=1)
        similarity, index = torch.topk(queries @ bank.T, k_max, dim=1)  # (B, k_max) each
        neighbour_labels = train_labels[index]  # (B, k_max)
        truth = test_labels[start : start + chunk, None]
        for i, (k, _, temperature) in enumerate(clipped):
            weights = (similarity[:, :k] / temperature).exp()
            scores = torch.zeros(queries.shape[0], classes, dtype=weights.dtype, device=device)
            scores.scatter_add_(1, neighbour_labels[:, :k], weights)
            # Stable sort: equal scores keep class order, so ties go to the lower class index.
            ranked = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top]
            predictions[i][start : start + chunk] = ranked[:, 0].cpu()
            hits1[i] += int((ranked[:, :1] == truth).sum())
            hits5[i] += int((ranked == truth).any(dim=1).sum())
    total = max(test_features.shape[0], 1)
    return [
        KnnResult(
            k=k,
            k_requested=k_requested,
            temperature=temperature,
            top1=hits1[i] / total,
            top5=hits5[i] / total,
            predictions=predictions[i].numpy(),
        )
        for i, (k, k_requested, temperature) in enumerate(clipped)
    ]


def find_result(results: Sequence[KnnResult], k: int, temperature: float) -> KnnResult:
    """The result for the requested (k, T) setting; KeyError naming the settings present."""
    for result in results:
        if result.k_requested == k and math.isclose(result.temperature, temperature):
            return result
    present = ", ".join(r.name for r in results)
    raise KeyError(f"no kNN result for k={k}, T={temperature}; present: {present}")
