"""Linear probes on frozen features, with the hyper-parameter chosen on a held-out split.

DINOv2's protocol: sweep a regularisation strength (C for logistic regression) or learning
rate on a seeded validation part of the train features, pick the best by validation top-1,
then refit on all of train and report test accuracy. Two implementations:

* ``logistic_regression_probe``: scikit-learn's ``LogisticRegression`` (lbfgs, float64),
  exact and simple; right for up to a few hundred thousand samples.
* ``sgd_probe``: a torch linear classifier trained with SGD and cosine decay, one head per
  learning rate trained on the same mini-batches (one pass over the features for the whole
  sweep); right for large feature sets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
DEFAULT_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
# Threads for the probes' BLAS (scikit-learn) and torch intra-op work. Measured on a loaded
# 2-core machine: lbfgs on 2,000 × 784 took 12 s with OpenBLAS's 2 spinning threads and 1.1 s
# with one; on 60,000 × 512, 25 s against 6.6 s; the SGD heads' (256, D) @ (D, C) products
# ran 3× faster on one torch thread. None keeps the libraries' defaults (e.g. on big hosts).
DEFAULT_THREADS = 1


class LinearProbeKind(str, Enum):
    """Which linear probe produced a result."""

    LOGISTIC = "logistic"  # scikit-learn LogisticRegression, C sweep
    SGD = "sgd"  # torch linear heads, learning-rate sweep


class HyperParameter(str, Enum):
    """The hyper-parameter a linear probe sweeps."""

    C = "C"  # inverse L2 regularisation strength of LogisticRegression
    LR = "lr"  # peak SGD learning rate


@dataclass
class LinearResult:
    """Test accuracy of a linear probe and how its hyper-parameter was chosen.

    Attributes:
        kind: which probe.
        hyperparameter: what was swept.
        chosen: the value picked on the validation split (the refit uses it).
        sweep: validation top-1 per swept value.
        top1: test top-1 of the model refit on all of train.
        per_class_accuracy: (C,) test recall per class (NaN for a class absent from test).
        confusion: (C, C) int64 counts, rows = true class, columns = predicted class.
        predictions: (N_test,) int64 predicted classes.
    """

    kind: LinearProbeKind
    hyperparameter: HyperParameter
    chosen: float
    sweep: dict[float, float]
    top1: float
    per_class_accuracy: np.ndarray = field(repr=False)
    confusion: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ValidationSplit:
    """Index arrays of a seeded split of the train features into fit and validation parts."""

    fit: np.ndarray
    validation: np.ndarray


def validation_split(labels: np.ndarray, fraction: float = 0.1, seed: int = 0) -> ValidationSplit:
    """Hold out ``fraction`` of the train samples, stratified by class when every class allows it.

    Args:
        labels: (N,) int class per train sample.
        fraction: share of samples held out for choosing the hyper-parameter.
        seed: makes the split reproducible.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    indices = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    fit, held_out = train_test_split(
        indices, test_size=fraction, random_state=seed, stratify=stratify
    )
    return ValidationSplit(fit=np.sort(fit), validation=np.sort(held_out))


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Cap BLAS/OpenMP and torch intra-op threads inside the block (None: leave them alone)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def classification_summary(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (C,) and confusion matrix (C, C) with rows = true class."""
    confusion = confusion_matrix(labels, predictions, labels=np.arange(num_classes))
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / support, np.nan)
    return per_class, confusion.astype(np.int64)


def _check(train_labels: np.ndarray, train_features: np.ndarray, test_features: np.ndarray) -> None:
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test feature dimensions differ ({train_features.shape[1]} vs "
            f"{test_features.shape[1]}): both must come from the same model"
        )
    if np.unique(train_labels).size < 2:
        raise ValueError("a linear probe needs at least two classes in the train labels")


def _result(
    kind: LinearProbeKind,
    hyperparameter: HyperParameter,
    sweep: dict[float, float],
    test_labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
) -> LinearResult:
    # max() keeps the first of equal scores: the smallest C (strongest regularisation) or LR.
    chosen = max(sweep, key=lambda value: sweep[value])
    per_class, confusion = classification_summary(test_labels, predictions, num_classes)
    return LinearResult(
        kind=kind,
        hyperparameter=hyperparameter,
        chosen=chosen,
        sweep=sweep,
        top1=float((predictions == test_labels).mean()),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=predictions,
    )


def _logistic(c: float, seed: int, max_iter: int) -> LogisticRegression:
    return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)


def logistic_regression_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    cs: Sequence[float] = DEFAULT_CS,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 1000,
    num_classes: int | None = None,
    threads: int | None = DEFAULT_THREADS,
) -> LinearResult:
    """Multinomial logistic regression with C chosen on a seeded validation split.

    Features are standardised with train statistics (float64) so one C grid fits backbones
    whose feature scales differ by orders of magnitude, and lbfgs converges.

    Args:
        train_features: (N_train, D) features; labels (N_train,) int class indices.
        test_features: (N_test, D) features; labels (N_test,).
        cs: inverse regularisation strengths to try (log-spaced by default, 1e-4 … 1e2).
        validation_fraction: share of train held out to choose C.
        seed: validation split and solver seed.
        max_iter: lbfgs iteration cap per fit.
        num_classes: C for the confusion matrix; default ``max(label) + 1``.
        threads: BLAS threads for the fits (see ``DEFAULT_THREADS``); None = library default.
    """
    with limited_threads(threads):
        return _logistic_sweep(
            train_features,
            train_labels,
            test_features,
            test_labels,
            cs,
            validation_fraction,
            seed,
            max_iter,
            num_classes,
        )


def _logistic_sweep(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    cs: Sequence[float],
    validation_fraction: float,
    seed: int,
    max_iter: int,
    num_classes: int | None,
) -> LinearResult:
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    _check(train_labels, train_features, test_features)
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    split = validation_split(train_labels, validation_fraction, seed)
    train64 = np.asarray(train_features, dtype=np.float64)
    scaler = StandardScaler().fit(train64[split.fit])
    fit_x, val_x = scaler.transform(train64[split.fit]), scaler.transform(train64[split.validation])
    sweep: dict[float, float] = {}
    for c in tqdm(cs, desc="logistic C sweep", leave=False):
        model = _logistic(c, seed, max_iter).fit(fit_x, train_labels[split.fit])
        sweep[float(c)] = float(model.score(val_x, train_labels[split.validation]))
        log.info("logistic regression C=%g: validation top-1 %.4f", c, sweep[float(c)])
    chosen = max(sweep, key=lambda value: sweep[value])
    scaler = StandardScaler().fit(train64)
    final = _logistic(chosen, seed, max_iter).fit(scaler.transform(train64), train_labels)
    predictions = final.predict(scaler.transform(np.asarray(test_features, dtype=np.float64)))
    return _result(
        LinearProbeKind.LOGISTIC, HyperParameter.C, sweep, test_labels, predictions, classes
    )


def train_linear_heads(
    features: torch.Tensor,
    labels: torch.Tensor,
    lrs: Sequence[float],
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[torch.nn.Linear]:
    """Train one linear head per learning rate on the same shuffled mini-batches.

    Each head has its own parameter group; ``CosineAnnealingLR`` decays every group from its
    own peak to zero over all steps. Features are read once per epoch for the whole sweep.

    Args:
        features: (N, D) float32 standardised features.
        labels: (N,) int64 classes.
        lrs: peak learning rate per head.
        num_classes: output size C of every head.

    Returns:
        One trained ``nn.Linear(D, C)`` per learning rate, in order.
    """
    generator = torch.Generator().manual_seed(seed)
    heads = []
    for _ in lrs:
        head = torch.nn.Linear(features.shape[1], num_classes)
        with torch.no_grad():  # seeded init so results do not depend on global RNG state
            head.weight.normal_(0.0, 0.01, generator=generator)
            head.bias.zero_()
        heads.append(head)
    optimizer = torch.optim.SGD(
        [{"params": head.parameters(), "lr": lr} for head, lr in zip(heads, lrs)],
        momentum=momentum,
        weight_decay=weight_decay,
    )
    steps = epochs * -(-features.shape[0] // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for _ in tqdm(range(epochs), desc=f"linear heads ×{len(heads)}", leave=False):
        order = torch.randperm(features.shape[0], generator=generator)
        for start in range(0, features.shape[0], batch_size):
            batch = order[start : start + batch_size]
            x, y = features[batch], labels[batch]
            losses = [torch.nn.functional.cross_entropy(head(x), y) for head in heads]
            loss = sum(losses[1:], losses[0])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # heads share no parameters, so each gets its own gradient
            optimizer.step()
            schedule.step()
    return heads


def _accuracy(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((head(features).argmax(dim=1) == labels).float().mean())


def sgd_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 10,
    batch_size: int = 256,
    validation_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    threads: int | None = DEFAULT_THREADS,
) -> LinearResult:
    """Linear classifier trained by SGD, learning rate chosen on a seeded validation split.

    All learning rates train together on the fit part (one feature pass per epoch), the best
    by validation top-1 is refit on all of train, and that head is scored on test.

    Args:
        train_features: (N_train, D); train_labels (N_train,) int classes.
        test_features: (N_test, D); test_labels (N_test,).
        lrs: peak learning rates to sweep.
        epochs, batch_size: SGD schedule (cosine decay to zero over ``epochs``).
        validation_fraction: share of train held out to choose the learning rate.
        seed: split, initialisation and batch order.
        num_classes: output size C; default ``max(label) + 1``.
        threads: torch intra-op threads (see ``DEFAULT_THREADS``); None = torch's default.
    """
    with limited_threads(threads):
        return _sgd_sweep(
            train_features,
            train_labels,
            test_features,
            test_labels,
            lrs,
            epochs,
            batch_size,
            validation_fraction,
            seed,
            num_classes,
        )


def _sgd_sweep(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    validation_fraction: float,
    seed: int,
    num_classes: int | None,
) -> LinearResult:
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    _check(train_labels, train_features, test_features)
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    split = validation_split(train_labels, validation_fraction, seed)
    x = torch.from_numpy(np.array(train_features, dtype=np.float32))
    y = torch.as_tensor(train_labels)

    def standardise(reference: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
        mean, std = reference.mean(dim=0), reference.std(dim=0).clamp_min(1e-6)
        return [(t - mean) / std for t in tensors]

    fit_x, val_x = standardise(x[split.fit], x[split.fit], x[split.validation])
    heads = train_linear_heads(fit_x, y[split.fit], lrs, classes, epochs, batch_size, seed=seed)
    sweep = {float(lr): _accuracy(head, val_x, y[split.validation]) for lr, head in zip(lrs, heads)}
    for lr, accuracy in sweep.items():
        log.info("SGD linear head lr=%g: validation top-1 %.4f", lr, accuracy)
    chosen = max(sweep, key=lambda value: sweep[value])
    test_x = torch.from_numpy(np.array(test_features, dtype=np.float32))
    all_x, test_x = standardise(x, x, test_x)
    (final,) = train_linear_heads(all_x, y, [chosen], classes, epochs, batch_size, seed=seed)
    with torch.inference_mode():
        predictions = final(test_x).argmax(dim=1).numpy()
    return _result(LinearProbeKind.SGD, HyperParameter.LR, sweep, test_labels, predictions, classes)
