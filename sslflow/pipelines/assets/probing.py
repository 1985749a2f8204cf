"""Probing assets: frozen features of the evaluation split, kNN and linear probes, the report.

Thin shells over :mod:`sslflow.evaluation`: each asset reads its inputs from the sslflow
home, runs one step, logs one MLflow run (metrics, chosen hyper-parameters, artifacts,
upstream run ids as tags) and returns headline numbers plus a markdown table as metadata.

Files: ``<home>/probe_features/index.json`` (+ the feature cache under
``<home>/probe_features/cache``), ``<home>/knn_probe/probes.json``,
``<home>/linear_probe/probes.json``, ``<home>/probing_report/`` (``index.html`` and PNGs).
"""

import hashlib
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from sslflow.data import Manifest
from sslflow.evaluation.features import UnlabelledShardsError
from sslflow.evaluation.probe import (
    FeatureConfig,
    FeatureIndex,
    KnnConfig,
    LinearConfig,
    ReportConfig,
    ResolvedModel,
    build_report_input,
    earlier_for,
    extract_all,
    knn_probe as run_knn,
    linear_probe as run_linear,
    log_report,
    report_tags,
    resolve_model,
    training_summary,
)
from sslflow.evaluation.report import (
    Projection,
    RunLink,
    comparison_columns,
    markdown_table,
    render_report,
    summary_markdown,
)
from sslflow.evaluation.results import (
    ModelProbe,
    Role,
    knn_metric,
    load_probes,
    merge_probes,
    save_probes,
)
from sslflow.pipelines.config import Core, core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.lineage import (
    INPUT_FINGERPRINT,
    input_fingerprint,
    reuse_if_unchanged,
    skip_when_unchanged,
)
from sslflow.pipelines.metadata import run_metadata
from sslflow.pipelines.resources import (
    MLflowTracking,
    SslflowHome,
    latest_metadata,
    upstream_run_ids,
)
from sslflow.tracking import TrackedRun, pin_model_uri

GROUP = "probing"
PROBES_FILE = "probes.json"


class ProbeFeaturesConfig(
    derive_config(
        FeatureConfig, "FeatureFields", "The fields of sslflow.evaluation.probe.FeatureConfig."
    )
):
    """Which model to probe and how its features are extracted."""

    model: str = Field(
        "",
        description="checkpoint path or MLflow model URI (models:/sslflow-<method>@current, models:/<name>/<version>), "
        "or random:<timm name>; empty = the model of the latest pretrained_model materialisation, else the "
        "newest registered sslflow-* model, else a randomly initialised `backbone`",
    )
    backbone: str = Field(
        "resnet10t", description="timm name of the random backbone used when no model exists"
    )
    small_stem: bool = Field(False, description="ResNet 3×3 stride-1 stem for that random backbone")


class KnnProbeConfig(
    derive_config(KnnConfig, "KnnFields", "The fields of sslflow.evaluation.probe.KnnConfig.")
):
    """Weighted kNN settings (InstDisc/DINO: cosine similarity, votes weighted by exp(sim/T))."""


class LinearProbeConfig(
    derive_config(
        LinearConfig, "LinearFields", "The fields of sslflow.evaluation.probe.LinearConfig."
    )
):
    """Linear probes with the hyper-parameter chosen on a seeded validation split of train."""


class ProbingReportConfig(
    derive_config(
        ReportConfig, "ReportFields", "The fields of sslflow.evaluation.probe.ReportConfig."
    )
):
    """How the report is drawn."""


def _core(config: dg.Config, core: type[Core]) -> Core:
    """The core config of an asset config; a value the core refuses fails as bad input."""
    try:
        return core(**core_values(config, core))
    except ValueError as exc:
        raise bad_input(f"bad {core.__name__}: {exc}") from exc


def _split(home: SslflowHome, split: str) -> Manifest:
    folder = home.asset_dir("eval_split") / split
    try:
        return Manifest.load(folder)
    except FileNotFoundError as exc:
        raise bad_input(f"no {split} shards at {folder}: materialise eval_split first") from exc


def _index(home: SslflowHome) -> FeatureIndex:
    try:
        return FeatureIndex.load(home.asset_dir("probe_features") / "index.json")
    except FileNotFoundError as exc:
        raise bad_input(str(exc)) from exc


def _pretrained_model_uri(context: dg.AssetExecutionContext) -> str:
    """``model_uri`` of the latest pretrained_model materialisation ('' when there is none)."""
    return str(latest_metadata(context, "pretrained_model", "model_uri") or "")


def _pinned_spec(
    context: dg.AssetExecutionContext, config: ProbeFeaturesConfig, mlflow: MLflowTracking
) -> str:
    """The model to probe, an alias resolved to the version it names now (an input, fingerprinted)."""
    spec = config.model or _pretrained_model_uri(context)
    try:
        return pin_model_uri(spec, mlflow.resolved_uri())
    except ValueError as exc:
        raise bad_input(f"cannot load model {spec}: {exc}") from exc


def _resolve(
    spec: str, config: ProbeFeaturesConfig, mlflow: MLflowTracking, train: Manifest
) -> ResolvedModel:
    try:
        return resolve_model(
            spec, mlflow.resolved_uri(), config.backbone, config.small_stem, train.geometry
        )
    except (ValueError, FileNotFoundError) as exc:
        raise bad_input(f"cannot load model {spec or '(latest registered)'}: {exc}") from exc


def _feature_table(index: FeatureIndex) -> str:
    rows = [
        [
            e.role.label,
            e.description,
            str(e.feature_dim),
            e.fingerprint[:12],
            f"{index.extract_seconds.get(e.role.value, 0.0):.1f}",
        ]
        for e in index.entries
    ]
    return markdown_table(["features", "source", "dim", "fingerprint", "seconds"], rows)


@dg.asset(
    group_name=GROUP,
    deps=["eval_split", "pretrained_model"],
    code_version="1",
    kinds={"numpy", "mlflow"},
)
def probe_features(
    context: dg.AssetExecutionContext,
    config: ProbeFeaturesConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Frozen features of eval_split's train and test shards for the model and its baselines."""
    train, test = _split(home, "train"), _split(home, "test")
    out = home.asset_dir("probe_features")
    spec = _pinned_spec(context, config, mlflow)
    # The pinned model is an input too: an alias (or `model` left empty) names a new version later.
    inputs = input_fingerprint(
        context, config, ["eval_split", "pretrained_model"], extra={"model": spec}
    )
    reused = reuse_if_unchanged(context, inputs, [out])
    if reused is not None:
        return reused
    model = _resolve(spec, config, mlflow, train)
    feature_config = _core(config, FeatureConfig)
    upstream = upstream_run_ids(context, ["eval_split", "pretrained_model"])
    with mlflow.start_run(context, "probe_features", upstream=upstream) as run:
        run.log_params({**config.model_dump(), "resolved_model": model.spec})
        run.log_shard_input("eval_split/train", train, "evaluation")
        run.log_shard_input("eval_split/test", test, "evaluation")
        try:
            index = extract_all(model, train, test, out / "cache", feature_config)
        except UnlabelledShardsError as exc:
            raise bad_input(str(exc)) from exc
        path = index.save(out / "index.json")
        run.log_artifact(path)
        run.log_metrics(
            {
                "train_samples": train.total_samples,
                "test_samples": test.total_samples,
                **{f"{e.role.value}.feature_dim": e.feature_dim for e in index.entries},
                **{f"{role}.extract_seconds": s for role, s in index.extract_seconds.items()},
            }
        )
        run.set_tags(
            {
                "sslflow.probe.model": model.spec,
                "sslflow.probe.fingerprint": index.model().fingerprint,
            }
        )
        metadata = {
            "model": model.spec,
            "feature_dim": index.model().feature_dim,
            "train_samples": train.total_samples,
            "test_samples": test.total_samples,
            "features": dg.MetadataValue.md(_feature_table(index)),
            "index": dg.MetadataValue.path(str(path)),
            INPUT_FINGERPRINT: inputs,
            **run_metadata(run),
        }
    version = hashlib.sha256(
        "".join(e.fingerprint for e in index.entries).encode()
        + (index.train_content_hash + index.test_content_hash).encode()
    ).hexdigest()
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def _log_probes(run: TrackedRun, probes: list[ModelProbe], path: Path) -> None:
    save_probes(probes, path)
    run.log_metrics({name: value for probe in probes for name, value in probe.metrics().items()})
    run.log_artifact(path)


def _headline(probes: list[ModelProbe]) -> dict[str, float]:
    """Metadata numbers: the headline kNN (k=20, T=0.07) and linear top-1 of every extractor."""
    found: dict[str, float] = {}
    for probe in probes:
        knn = probe.headline_knn()
        if knn is not None:
            found[f"{probe.role.value}_knn_k{knn.k_requested}_top1"] = round(knn.top1, 4)
        for result in probe.linear:
            found[f"{probe.role.value}_linear_{result.kind.value}_top1"] = round(result.top1, 4)
    return found


def _probe_table(probes: list[ModelProbe]) -> str:
    columns = comparison_columns(probes)
    rows = [
        [p.role.label, *[cell(p.metrics(), p.role.value) for _, cell in columns]] for p in probes
    ]
    return markdown_table(["features", *[name for name, _ in columns]], rows)


@dg.asset(group_name=GROUP, deps=["probe_features"], code_version="1", kinds={"pytorch", "mlflow"})
@skip_when_unchanged
def knn_probe(
    context: dg.AssetExecutionContext,
    config: KnnProbeConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Weighted kNN top-1/top-5 of the model and its baselines on the test split."""
    knn_config = _core(config, KnnConfig)
    index = _index(home)
    with mlflow.start_run(
        context, "knn_probe", upstream=upstream_run_ids(context, ["probe_features"])
    ) as run:
        run.log_params({**config.model_dump(), "model": index.model().description})
        started = time.perf_counter()
        probes = run_knn(index, knn_config.settings())
        run.log_metrics({"seconds": time.perf_counter() - started})
        _log_probes(run, probes, home.asset_dir("knn_probe") / PROBES_FILE)
        metadata = {
            **_headline(probes),
            "table": dg.MetadataValue.md(_probe_table(probes)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP, deps=["probe_features"], code_version="1", kinds={"scikitlearn", "mlflow"}
)
@skip_when_unchanged
def linear_probe(
    context: dg.AssetExecutionContext,
    config: LinearProbeConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Linear-probe top-1 (hyper-parameter chosen on a validation split) of the model and baselines."""
    linear_config = _core(config, LinearConfig)
    index = _index(home)
    with mlflow.start_run(
        context, "linear_probe", upstream=upstream_run_ids(context, ["probe_features"])
    ) as run:
        run.log_params({**config.model_dump(), "model": index.model().description})
        started = time.perf_counter()
        probes = run_linear(index, linear_config)
        run.log_metrics({"seconds": time.perf_counter() - started})
        _log_probes(run, probes, home.asset_dir("linear_probe") / PROBES_FILE)
        metadata = {
            **_headline(probes),
            "table": dg.MetadataValue.md(_probe_table(probes)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


REPORT_UPSTREAM = ["eval_split", "probe_features", "knn_probe", "linear_probe"]


def _run_links(mlflow: MLflowTracking, run: TrackedRun, upstream: dict[str, str]) -> list[RunLink]:
    links = []
    for asset, run_id in upstream.items():
        experiment_id = run.client.get_run(run_id).info.experiment_id
        links.append(
            RunLink(asset, run_id, f"{mlflow.ui_url}/#/experiments/{experiment_id}/runs/{run_id}")
        )
    return links


@dg.asset(
    group_name=GROUP,
    deps=[
        "knn_probe",
        "linear_probe",
        "probe_features",
    ],  # the features' index and test features too
    code_version="1",
    kinds={"html", "mlflow"},
)
@skip_when_unchanged
def probing_report(
    context: dg.AssetExecutionContext,
    config: ProbingReportConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """HTML report: the model against raw pixels, a random init and earlier runs, with plots."""
    report_config = _core(config, ReportConfig)
    index = _index(home)
    try:
        probes = merge_probes(
            load_probes(home.asset_dir("knn_probe") / PROBES_FILE),
            load_probes(home.asset_dir("linear_probe") / PROBES_FILE),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise bad_input(str(exc)) from exc
    model = index.model()
    trained = training_summary(model.description, mlflow.resolved_uri())
    # The run that trained the probed version, not the latest pretrained_model run (which may be
    # another method or a later version).
    upstream = upstream_run_ids(context, REPORT_UPSTREAM)
    if "training run" in trained:
        upstream["pretrained_model"] = trained["training run"]
    with mlflow.start_run(context, "probing_report", upstream=upstream) as run:
        train, test = model.load()
        summary = {
            "model": model.description,
            **trained,
            "data": f"eval_split: {len(train)} train / {len(test)} test; classes {', '.join(index.classes)}",
            "probe wall time": f"{sum(p.seconds for p in probes) + sum(index.extract_seconds.values()):.1f} s "
            "(features + kNN + linear)",
        }
        report_input = build_report_input(
            index,
            probes,
            summary,
            upstream=_run_links(mlflow, run, upstream),
            earlier=earlier_for(run)[: report_config.earlier_runs],
        )
        page = render_report(
            report_input, home.asset_dir("probing_report"), Projection(report_config.projection)
        )
        markdown = summary_markdown(report_input)
        run.set_tags(report_tags(index))
        run.log_params(config.model_dump())
        run.log_metrics(
            {name: value for probe in probes for name, value in probe.metrics().items()}
        )
        log_report(run, page)
        metadata = {
            **_headline(probes),
            "report": dg.MetadataValue.path(str(page)),
            "summary": dg.MetadataValue.md(markdown),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=knn_probe,
    description="the model's kNN top-1 (k=20, T=0.07) beats the raw-pixel baseline",
)
def knn_beats_raw_pixels(home: SslflowHome) -> dg.AssetCheckResult:
    probes = {p.role: p for p in load_probes(home.asset_dir("knn_probe") / PROBES_FILE)}
    model, raw = probes.get(Role.MODEL), probes.get(Role.RAW_PIXELS)
    if model is None or raw is None or model.headline_knn() is None or raw.headline_knn() is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no raw-pixel baseline was probed (probe_features baselines=false)",
        )
    ours, pixels = model.headline_knn().top1, raw.headline_knn().top1
    return dg.AssetCheckResult(
        passed=ours > pixels,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            knn_metric(Role.MODEL): round(ours, 4),
            knn_metric(Role.RAW_PIXELS): round(pixels, 4),
            "margin": round(ours - pixels, 4),
        },
    )
