"""Probe a backbone end to end: resolve it, extract features, run kNN and linear probes, report.

Layered like DINOv2's ``eval/knn.py``: the probes are pure functions on arrays
(:mod:`~sslflow.evaluation.knn`, :mod:`~sslflow.evaluation.linear`), the other modules build
their inputs and the report, and :func:`run_probe` is the one call that chains them. The
Dagster assets call the same steps one asset at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sslflow.data import Manifest
from sslflow.evaluation.config import ProbeConfig
from sslflow.evaluation.index import FeatureIndex, extract_all
from sslflow.evaluation.probes import knn_probe, linear_probe
from sslflow.evaluation.report_runs import RunLogger
from sslflow.evaluation.report_writer import write_probe_report
from sslflow.evaluation.resolve import resolve_model, training_summary
from sslflow.evaluation.results import ModelProbe, merge_probes, probe_metrics


@dataclass
class ProbeResult:
    """What :func:`run_probe` produced.

    Attributes:
        model: the resolved model spec.
        probes: kNN and linear results, model first, then baselines.
        report: the HTML report (plots beside it).
        markdown: the comparison table as markdown.
        index: where the features are cached.
        seconds: wall time of the whole probe.
    """

    model: str
    probes: list[ModelProbe]
    report: Path
    markdown: str
    index: FeatureIndex
    seconds: float

    def metrics(self) -> dict[str, float]:
        return probe_metrics(self.probes)


def _manifest(shards: Manifest | str | Path) -> Manifest:
    return shards if isinstance(shards, Manifest) else Manifest.load(shards)


def run_probe(
    model_spec: str,
    train_shards: Manifest | str | Path,
    test_shards: Manifest | str | Path,
    out_dir: str | Path,
    config: ProbeConfig | None = None,
    tracking_uri: str | None = None,
    cache_root: str | Path | None = None,
    run: RunLogger | None = None,
    fallback_backbone: str = "resnet10t",
) -> ProbeResult:
    """Probe a model on a labelled train/test pair of shard sets and write the report.

    Args:
        model_spec: see :func:`~sslflow.evaluation.resolve.resolve_model`
            (``models:/sslflow-simclr@current``, a checkpoint path, ``random:resnet18``, or
            empty for the newest registered model).
        train_shards: labelled train shard set (manifest, or its folder / manifest.json).
        test_shards: labelled test shard set.
        out_dir: ``report/`` (``index.html`` and PNGs) goes here, and ``features/`` by default.
        config: probe settings (default ``ProbeConfig()``).
        tracking_uri: MLflow URI used to resolve model URIs.
        cache_root: feature cache root (default ``<out_dir>/features``).
        run: when given, params, metrics, tags and the report are logged to this MLflow run,
            and earlier runs of its experiment are compared in the report.
        fallback_backbone: architecture probed at random init when nothing is registered.

    Raises:
        UnlabelledShardsError: a shard set carries no labels.
        ValueError: the model spec cannot be resolved (lists registered models and aliases).
    """
    started = time.perf_counter()
    config = config or ProbeConfig()
    train, test = _manifest(train_shards), _manifest(test_shards)
    out = Path(out_dir)
    model = resolve_model(model_spec, tracking_uri, fallback_backbone, images=train.geometry)
    index = extract_all(
        model, train, test, Path(cache_root) if cache_root else out / "features", config.features
    )
    probes = merge_probes(
        knn_probe(index, config.knn.settings()), linear_probe(index, config.linear)
    )
    summary = {
        "model": model.spec,
        **training_summary(model.spec, tracking_uri),
        "train": f"{train.total_samples} samples, {train.root}",
        "test": f"{test.total_samples} samples, {test.root}",
        "wall time": f"{time.perf_counter() - started:.1f} s",
    }
    page, markdown = write_probe_report(
        index,
        probes,
        summary,
        out / "report",
        config.report,
        run,
        params={"model": model.spec, **config.params()},
    )
    result = ProbeResult(model.spec, probes, page, markdown, index, time.perf_counter() - started)
    if run is not None:
        run.log_metrics({"wall_seconds": result.seconds})
    return result
