"""Probing frozen features: weighted kNN, linear probes, baselines and reports (no Dagster)."""

from sslflow.evaluation.features import (
    Embedder,
    FeatureSet,
    RawPixels,
    UnlabelledShardsError,
    extract_features,
    load_feature_set,
)
from sslflow.evaluation.knn import DEFAULT_SETTINGS, KnnResult, weighted_knn
from sslflow.evaluation.linear import (
    HyperParameter,
    LinearProbeKind,
    LinearResult,
    logistic_regression_probe,
    sgd_probe,
)
from sslflow.evaluation.probe import ProbeConfig, ProbeResult, resolve_model, run_probe
from sslflow.evaluation.report import Projection, ReportInput, render_report, summary_markdown
from sslflow.evaluation.results import ModelProbe, Role

__all__ = [
    "DEFAULT_SETTINGS",
    "Embedder",
    "FeatureSet",
    "HyperParameter",
    "KnnResult",
    "LinearProbeKind",
    "LinearResult",
    "ModelProbe",
    "ProbeConfig",
    "ProbeResult",
    "Projection",
    "RawPixels",
    "ReportInput",
    "Role",
    "UnlabelledShardsError",
    "extract_features",
    "load_feature_set",
    "logistic_regression_probe",
    "render_report",
    "resolve_model",
    "run_probe",
    "sgd_probe",
    "summary_markdown",
    "weighted_knn",
]
