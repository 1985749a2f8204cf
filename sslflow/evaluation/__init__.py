"""Probing frozen features: weighted kNN, linear probes, baselines and reports (no Dagster)."""

from sslflow.evaluation.config import (
    FeatureConfig,
    KnnConfig,
    LinearConfig,
    ProbeConfig,
    ReportConfig,
)
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
from sslflow.evaluation.plots import Projection
from sslflow.evaluation.probe import ProbeResult, run_probe
from sslflow.evaluation.report import ReportInput, render_report, summary_markdown
from sslflow.evaluation.report_writer import write_probe_report
from sslflow.evaluation.resolve import resolve_model
from sslflow.evaluation.results import ModelProbe, Role

__all__ = [
    "DEFAULT_SETTINGS",
    "Embedder",
    "FeatureConfig",
    "FeatureSet",
    "HyperParameter",
    "KnnConfig",
    "KnnResult",
    "LinearConfig",
    "LinearProbeKind",
    "LinearResult",
    "ModelProbe",
    "ProbeConfig",
    "ProbeResult",
    "Projection",
    "RawPixels",
    "ReportConfig",
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
    "write_probe_report",
]
