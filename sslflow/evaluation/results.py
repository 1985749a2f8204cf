"""Probe results of one feature extractor, their metric names and their JSON form.

Metric names are shared by MLflow logging, the report and the search for earlier runs:
``<role>.knn.k<k>_t<T>.top1``, ``<role>.knn.k<k>_t<T>.top5``, ``<role>.linear.<kind>.top1``
and ``<role>.linear.<kind>.<hyper-parameter>``, where role is ``model``, ``random_init`` or
``raw_pixels``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.evaluation.knn import DEFAULT_TEMPERATURE, KnnResult, find_result
from sslflow.evaluation.linear import HyperParameter, LinearProbeKind, LinearResult

HEADLINE_K = 20  # the report's headline kNN setting: k=20, T=0.07 (DINO's default)


class Role(str, Enum):
    """What a feature extractor is in a probing report."""

    MODEL = "model"  # the backbone being judged
    RANDOM_INIT = "random_init"  # a randomly initialised copy of the same architecture
    RAW_PIXELS = "raw_pixels"  # flattened pixels, no network

    @property
    def label(self) -> str:
        return {"model": "model", "random_init": "random init", "raw_pixels": "raw pixels"}[
            self.value
        ]


@dataclass
class ModelProbe:
    """Every probe result for one feature extractor on one train/test split.

    Attributes:
        role: model or baseline.
        description: what was probed (model URI, checkpoint path, backbone name).
        fingerprint: the features' cache key.
        feature_dim: width D of the features.
        knn: weighted kNN results, one per (k, T).
        linear: linear probe results, one per probe kind.
        seconds: wall time of the probes (feature extraction excluded).
    """

    role: Role
    description: str
    fingerprint: str
    feature_dim: int
    knn: list[KnnResult] = field(default_factory=list)
    linear: list[LinearResult] = field(default_factory=list)
    seconds: float = 0.0

    def headline_knn(self) -> KnnResult | None:
        """The k=20, T=0.07 result (or the first one when that setting was not run)."""
        try:
            return find_result(self.knn, HEADLINE_K, DEFAULT_TEMPERATURE)
        except KeyError:
            return self.knn[0] if self.knn else None

    def linear_result(self, kind: LinearProbeKind) -> LinearResult | None:
        return next((r for r in self.linear if r.kind is kind), None)

    def metrics(self) -> dict[str, float]:
        """Flat metrics named ``<role>.knn.…`` and ``<role>.linear.…`` (see module docstring)."""
        prefix = self.role.value
        out: dict[str, float] = {f"{prefix}.feature_dim": float(self.feature_dim)}
        for knn in self.knn:
            out[f"{prefix}.knn.{knn.name}.top1"] = knn.top1
            out[f"{prefix}.knn.{knn.name}.top5"] = knn.top5
        for linear in self.linear:
            out[f"{prefix}.linear.{linear.kind.value}.top1"] = linear.top1
            out[f"{prefix}.linear.{linear.kind.value}.{linear.hyperparameter.value}"] = (
                linear.chosen
            )
        return out


def probe_metrics(probes: Sequence[ModelProbe]) -> dict[str, float]:
    """Every probe's metrics in one flat dict (what the probing runs log to MLflow)."""
    return {name: value for probe in probes for name, value in probe.metrics().items()}


def knn_metric(role: Role, k: int = HEADLINE_K, temperature: float = DEFAULT_TEMPERATURE) -> str:
    """The metric name of one kNN setting's top-1, e.g. ``model.knn.k20_t0.07.top1``."""
    return f"{role.value}.knn.k{k}_t{temperature:g}.top1"


def _knn_to_json(result: KnnResult) -> dict[str, Any]:
    return {
        "k": result.k,
        "k_requested": result.k_requested,
        "temperature": result.temperature,
        "top1": result.top1,
        "top5": result.top5,
        "predictions": result.predictions.tolist(),
    }


def _linear_to_json(result: LinearResult) -> dict[str, Any]:
    return {
        "kind": result.kind.value,
        "hyperparameter": result.hyperparameter.value,
        "chosen": result.chosen,
        "sweep": [[value, accuracy] for value, accuracy in result.sweep.items()],
        "top1": result.top1,
        "per_class_accuracy": [
            None if np.isnan(v) else float(v) for v in result.per_class_accuracy
        ],
        "confusion": result.confusion.tolist(),
        "predictions": result.predictions.tolist(),
    }


def probe_to_json(probe: ModelProbe) -> dict[str, Any]:
    """A JSON-able dict that :func:`probe_from_json` turns back into an equal ``ModelProbe``."""
    return {
        "role": probe.role.value,
        "description": probe.description,
        "fingerprint": probe.fingerprint,
        "feature_dim": probe.feature_dim,
        "knn": [_knn_to_json(r) for r in probe.knn],
        "linear": [_linear_to_json(r) for r in probe.linear],
        "seconds": probe.seconds,
    }


def probe_from_json(body: Mapping[str, Any]) -> ModelProbe:
    knn = [
        KnnResult(
            k=r["k"],
            k_requested=r["k_requested"],
            temperature=r["temperature"],
            top1=r["top1"],
            top5=r["top5"],
            predictions=np.asarray(r["predictions"], dtype=np.int64),
        )
        for r in body["knn"]
    ]
    linear = [
        LinearResult(
            kind=LinearProbeKind(r["kind"]),
            hyperparameter=HyperParameter(r["hyperparameter"]),
            chosen=r["chosen"],
            sweep={float(v): float(a) for v, a in r["sweep"]},
            top1=r["top1"],
            per_class_accuracy=np.array(
                [np.nan if v is None else v for v in r["per_class_accuracy"]]
            ),
            confusion=np.asarray(r["confusion"], dtype=np.int64),
            predictions=np.asarray(r["predictions"], dtype=np.int64),
        )
        for r in body["linear"]
    ]
    return ModelProbe(
        role=Role(body["role"]),
        description=body["description"],
        fingerprint=body["fingerprint"],
        feature_dim=body["feature_dim"],
        knn=knn,
        linear=linear,
        seconds=body.get("seconds", 0.0),
    )


def save_probes(probes: list[ModelProbe], path: Path) -> Path:
    """Write probes as JSON (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps([probe_to_json(p) for p in probes]))
    partial.replace(path)
    return path


def load_probes(path: Path) -> list[ModelProbe]:
    if not path.is_file():
        raise FileNotFoundError(f"no probe results at {path} (written by save_probes)")
    return [probe_from_json(body) for body in json.loads(path.read_text())]


def merge_probes(*groups: list[ModelProbe]) -> list[ModelProbe]:
    """Join kNN and linear results of the same roles (from separate assets), in role order."""
    merged: dict[Role, ModelProbe] = {}
    for group in groups:
        for probe in group:
            if probe.role not in merged:
                merged[probe.role] = ModelProbe(
                    probe.role, probe.description, probe.fingerprint, probe.feature_dim
                )
            target = merged[probe.role]
            if target.fingerprint != probe.fingerprint:
                raise ValueError(
                    f"{probe.role.label} results come from different features "
                    f"({target.fingerprint[:12]} vs {probe.fingerprint[:12]}): "
                    "probe one feature index with both kNN and linear probes"
                )
            target.knn.extend(probe.knn)
            target.linear.extend(probe.linear)
            target.seconds += probe.seconds
    return [merged[role] for role in Role if role in merged]
