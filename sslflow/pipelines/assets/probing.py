"""Probing assets: frozen features of the evaluation split, kNN and linear probes, the report.

Thin shells over :mod:`sslflow.evaluation`: each asset reads its inputs from the sslflow
home, runs one step, logs one MLflow run (metrics, chosen hyper-parameters, artifacts,
upstream run ids as tags) and returns headline numbers plus a markdown table as metadata.
A missing or mismatched input fails as bad input, the core's message plus which asset to
materialise.

Files: ``<home>/probe_features/index.json`` (+ the feature cache under
``<home>/probe_features/cache``), ``<home>/knn_probe/probes.json``,
``<home>/linear_probe/probes.json``, ``<home>/probing_report/`` (``index.html`` and PNGs).
"""

import contextlib
import functools
import time
from collections.abc import Callable, Iterator

import dagster as dg
from pydantic import Field

from sslflow.data import Manifest
from sslflow.evaluation.config import FeatureConfig, KnnConfig, LinearConfig, ReportConfig
from sslflow.evaluation.features import UnlabelledShardsError
from sslflow.evaluation.index import FeatureIndex, extract_all
from sslflow.evaluation.probes import knn_probe as run_knn, linear_probe as run_linear
from sslflow.evaluation.report_runs import feature_tags
from sslflow.evaluation.report_writer import write_probe_report
from sslflow.evaluation.resolve import ResolvedModel, resolve_model, training_summary
from sslflow.evaluation.results import (
    ModelProbe,
    Role,
    knn_metric,
    load_probes,
    merge_probes,
    probe_metrics,
    save_probes,
)
from sslflow.evaluation.tables import feature_table, probe_table
from sslflow.pipelines.config import Core, core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.instance import latest_metadata, upstream_run_ids
from sslflow.pipelines.lineage import (
    INPUT_FINGERPRINT,
    input_fingerprint,
    reuse_if_unchanged,
    skip_when_unchanged,
)
from sslflow.pipelines.metadata import run_metadata
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.tracking.registry import pin_model_uri

GROUP = "probing"
PROBES_FILE = "probes.json"
FEATURES_HINT = "materialise probe_features first"


class ProbeFeaturesConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        FeatureConfig, "FeatureFields", "The fields of sslflow.evaluation.config.FeatureConfig."
    )
):
    """Which model to probe and how its features are extracted."""

    model: str = Field(
        "",
        description="checkpoint path or MLflow model URI (models:/sslflow-<method>@current, "
        "models:/<name>/<version>), or random:<timm name>; empty = the model of the latest "
        "pretrained_model materialisation, else the newest registered sslflow-* model, else a "
        "randomly initialised `backbone`",
    )
    backbone: str = Field(
        "resnet10t", description="timm name of the random backbone used when no model exists"
    )
    small_stem: bool = Field(False, description="ResNet 3×3 stride-1 stem for that random backbone")


class KnnProbeConfig(
    derive_config(  # type: ignore[misc]
        KnnConfig, "KnnFields", "The fields of sslflow.evaluation.config.KnnConfig."
    )
):
    """Weighted kNN settings (InstDisc/DINO: cosine similarity, votes weighted by exp(sim/T))."""


class LinearProbeConfig(
    derive_config(  # type: ignore[misc]
        LinearConfig, "LinearFields", "The fields of sslflow.evaluation.config.LinearConfig."
    )
):
    """Linear probes with the hyper-parameter chosen on a seeded validation split of train."""


class ProbingReportConfig(
    derive_config(  # type: ignore[misc]
        ReportConfig, "ReportFields", "The fields of sslflow.evaluation.config.ReportConfig."
    )
):
    """How the report is drawn."""


@contextlib.contextmanager
def _bad_input(
    hint: str, errors: tuple[type[Exception], ...] = (FileNotFoundError,)
) -> Iterator[None]:
    """A core error in ``errors`` fails as bad input: the core's message, then ``hint``."""
    try:
        yield
    except errors as exc:
        raise bad_input(f"{exc}: {hint}") from exc


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
    with _bad_input(FEATURES_HINT):
        return FeatureIndex.load(home.asset_dir("probe_features") / "index.json")


def _probes(home: SslflowHome) -> list[ModelProbe]:
    """The kNN and linear results, joined per feature extractor."""
    with _bad_input(
        "materialise knn_probe and linear_probe first", (FileNotFoundError, ValueError)
    ):
        knn = load_probes(home.asset_dir("knn_probe") / PROBES_FILE)
        linear = load_probes(home.asset_dir("linear_probe") / PROBES_FILE)
    with _bad_input("re-materialise knn_probe and linear_probe together", (ValueError,)):
        return merge_probes(knn, linear)


def _pinned_spec(
    context: dg.AssetExecutionContext, config: ProbeFeaturesConfig, mlflow: MLflowTracking
) -> str:
    """The model to probe, an alias resolved to the version it names now (an input, fingerprinted).

    Empty ``config.model``: the ``model_uri`` of the latest pretrained_model materialisation.
    """
    spec = config.model or str(latest_metadata(context, "pretrained_model", "model_uri") or "")
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
        with _bad_input("materialise eval_split from a labelled source", (UnlabelledShardsError,)):
            index = extract_all(model, train, test, out / "cache", feature_config)
        path = index.save(out / "index.json")
        run.log_artifact(path)
        samples = {"train_samples": train.total_samples, "test_samples": test.total_samples}
        run.log_metrics({**samples, **index.metrics()})
        run.set_tags(feature_tags(index))
        metadata = {
            "model": model.spec,
            "feature_dim": index.model().feature_dim,
            **samples,
            "features": dg.MetadataValue.md(feature_table(index)),
            "index": dg.MetadataValue.path(str(path)),
            INPUT_FINGERPRINT: inputs,
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(index.digest()))


def _probe_step(
    context: dg.AssetExecutionContext,
    asset: str,
    config: dg.Config,
    home: SslflowHome,
    mlflow: MLflowTracking,
    probe: Callable[[FeatureIndex], list[ModelProbe]],
) -> dg.MaterializeResult:
    """The body of knn_probe and linear_probe: ``probe`` every feature set, log, headline."""
    index = _index(home)
    with mlflow.start_run(
        context, asset, upstream=upstream_run_ids(context, ["probe_features"])
    ) as run:
        run.log_params({**config.model_dump(), "model": index.model().description})
        started = time.perf_counter()
        with _bad_input(FEATURES_HINT):
            probes = probe(index)
        run.log_metrics({"seconds": time.perf_counter() - started})
        path = save_probes(probes, home.asset_dir(asset) / PROBES_FILE)
        run.log_metrics(probe_metrics(probes))
        run.log_artifact(path)
        metadata = {
            **_headline(probes),
            "table": dg.MetadataValue.md(probe_table(probes)),
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name=GROUP, deps=["probe_features"], code_version="1", kinds={"pytorch", "mlflow"})
@skip_when_unchanged
def knn_probe(
    context: dg.AssetExecutionContext,
    config: KnnProbeConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """Weighted kNN top-1/top-5 of the model and its baselines on the test split."""
    settings = _core(config, KnnConfig).settings()
    knn = functools.partial(run_knn, settings=settings)
    return _probe_step(context, "knn_probe", config, home, mlflow, knn)


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
    """Linear-probe top-1 (hyper-parameter chosen on a validation split) of model and baselines."""
    linear = functools.partial(run_linear, config=_core(config, LinearConfig))
    return _probe_step(context, "linear_probe", config, home, mlflow, linear)


REPORT_UPSTREAM = ["eval_split", "probe_features", "knn_probe", "linear_probe"]


def _summary(
    index: FeatureIndex, probes: list[ModelProbe], trained: dict[str, str]
) -> dict[str, str]:
    """The report's summary rows: the model, its training run, the data, the probes' time."""
    train, test = index.model().load()
    seconds = sum(p.seconds for p in probes) + sum(index.extract_seconds.values())
    return {
        "model": index.model().description,
        **trained,
        "data": f"eval_split: {len(train)} train / {len(test)} test; "
        f"classes {', '.join(index.classes)}",
        "probe wall time": f"{seconds:.1f} s (features + kNN + linear)",
    }


@dg.asset(
    group_name=GROUP,
    deps=["knn_probe", "linear_probe", "probe_features"],  # the index and test features too
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
    index, probes = _index(home), _probes(home)
    trained = training_summary(index.model().description, mlflow.resolved_uri())
    # The run that trained the probed version, not the latest pretrained_model run (which may be
    # another method or a later version).
    upstream = upstream_run_ids(context, REPORT_UPSTREAM)
    if "training run" in trained:
        upstream["pretrained_model"] = trained["training run"]
    with mlflow.start_run(context, "probing_report", upstream=upstream) as run:
        with _bad_input(FEATURES_HINT):
            page, markdown = write_probe_report(
                index,
                probes,
                _summary(index, probes, trained),
                home.asset_dir("probing_report"),
                report_config,
                run,
                config.model_dump(),
                upstream,
            )
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
    model_knn = model.headline_knn() if model else None
    raw_knn = raw.headline_knn() if raw else None
    if model_knn is None or raw_knn is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no raw-pixel baseline was probed (probe_features baselines=false)",
        )
    ours, pixels = model_knn.top1, raw_knn.top1
    return dg.AssetCheckResult(
        passed=ours > pixels,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            knn_metric(Role.MODEL): round(ours, 4),
            knn_metric(Role.RAW_PIXELS): round(pixels, 4),
            "margin": round(ours - pixels, 4),
        },
    )
