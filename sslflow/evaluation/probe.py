"""Probe a backbone end to end: resolve it, extract features, run kNN and linear probes, report.

Layered like DINOv2's ``eval/knn.py``: the probes are pure functions on arrays
(:mod:`~sslflow.evaluation.knn`, :mod:`~sslflow.evaluation.linear`); this module builds their
inputs from a model spec and shard sets, and :func:`run_probe` is the one call behind
``sslflow probe``. The Dagster assets call the same steps one asset at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from sslflow.data import Manifest
from sslflow.data.geometry import ImageGeometry
from sslflow.evaluation.features import (
    FeatureSet,
    RawPixels,
    extract_features,
    load_feature_set,
)
from sslflow.evaluation.knn import (
    DEFAULT_KS,
    DEFAULT_SETTINGS,
    DEFAULT_TEMPERATURE,
    LIGHTLY_SETTING,
    KnnResult,
    weighted_knn,
)
from sslflow.evaluation.linear import (
    DEFAULT_CS,
    DEFAULT_LRS,
    LinearProbeKind,
    LinearResult,
    logistic_regression_probe,
    sgd_probe,
)
from sslflow.evaluation.report import (
    MODEL_TAG,
    REPORT_TAG,
    EarlierRun,
    Projection,
    ReportInput,
    RunLink,
    earlier_runs,
    render_report,
    summary_markdown,
)
from sslflow.evaluation.results import ModelProbe, Role, merge_probes
from sslflow.models import Embedder, FrozenBackbone, load_backbone, random_backbone

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class FeatureConfig:
    """How frozen features are extracted (the probe_features asset).

    Attributes:
        baselines: also extract raw pixels (at most 32 px a side) and a randomly initialised
            copy of the model.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding shards (0 = in process).
        seed: seed of the randomly initialised baseline.
    """

    baselines: bool = True
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0


@dataclass(frozen=True)
class KnnConfig:
    """Weighted kNN settings (InstDisc/DINO: cosine similarity, votes weighted by exp(sim/T)).

    Attributes:
        ks: neighbour counts, each at temperature ``temperature``.
        temperature: T in exp(sim / T); 0.07 as in DINO.
        lightly_setting: add k=200, T=0.1 to compare with lightly's benchmark tables.
    """

    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = DEFAULT_TEMPERATURE
    lightly_setting: bool = True

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or self.temperature <= 0:
            raise ValueError(
                f"kNN needs ks ≥ 1 and temperature > 0, got ks={self.ks}, temperature={self.temperature}"
            )

    def settings(self) -> tuple[tuple[int, float], ...]:
        """The (k, T) pairs to evaluate."""
        found = [(k, self.temperature) for k in self.ks]
        if self.lightly_setting and LIGHTLY_SETTING not in found:
            found.append(LIGHTLY_SETTING)
        return tuple(found)


@dataclass(frozen=True)
class LinearConfig:
    """Linear probes, each hyper-parameter chosen on a seeded validation split of train.

    Attributes:
        probes: sgd: torch heads for all learning rates in one pass (fast on 60k × 512);
            logistic: scikit-learn lbfgs with a C sweep (exact, ~minutes per C on 60k samples
            on 2 CPU cores).
        cs: C values of the logistic sweep (log-spaced).
        lrs: peak learning rates of the SGD sweep.
        sgd_epochs: epochs of each SGD head (cosine decay to zero).
        validation_fraction: share of train held out to choose C / the learning rate.
        seed: validation split, initialisation and batch order.
    """

    probes: tuple[str, ...] = (LinearProbeKind.SGD.value,)
    cs: tuple[float, ...] = DEFAULT_CS
    lrs: tuple[float, ...] = DEFAULT_LRS
    sgd_epochs: int = 10
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        known = [kind.value for kind in LinearProbeKind]
        if not self.probes or any(p not in known for p in self.probes):
            raise ValueError(
                f"linear probes must be a non-empty list of {known}, got {list(self.probes)}"
            )

    def kinds(self) -> tuple[LinearProbeKind, ...]:
        return tuple(LinearProbeKind(p) for p in self.probes)


@dataclass(frozen=True)
class ReportConfig:
    """How the probing report is drawn.

    Attributes:
        projection: 2-D projection of test features: pca, or tsne (~30 s).
        earlier_runs: earlier probing reports of the experiment shown in the table.
    """

    projection: Literal["pca", "tsne"] = "pca"
    earlier_runs: int = 10

    def __post_init__(self) -> None:
        Projection(self.projection)


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how: one part per probing step (each is also an asset's config).

    Attributes:
        features: feature extraction (probe_features).
        knn: weighted kNN (knn_probe).
        linear: linear probes (linear_probe).
        report: the report (probing_report).
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


class RunLogger(Protocol):
    """The part of an MLflow run handle the probe logs through (``TrackedRun`` provides it)."""

    run_id: str
    experiment_id: str
    url: str
    client: Any

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...


# --- models ---------------------------------------------------------------------------------


@dataclass
class ResolvedModel:
    """The backbone to probe and how it was named."""

    backbone: FrozenBackbone
    spec: str


def resolve_model(
    spec: str,
    tracking_uri: str | None = None,
    fallback_backbone: str = "resnet10t",
    small_stem: bool = False,
    images: ImageGeometry | None = None,
) -> ResolvedModel:
    """Turn a model spec into a frozen backbone.

    Args:
        spec: a checkpoint path or MLflow model URI (``models:/sslflow-<method>@<alias>``,
            ``runs:/<id>/model``); ``random:<timm name>`` for a randomly initialised backbone;
            empty for the newest registered ``sslflow-*`` model, else a random
            ``fallback_backbone``.
        tracking_uri: MLflow tracking/registry URI for model URIs.
        fallback_backbone: timm name used when ``spec`` is empty and nothing is registered.
        small_stem: ResNet stem of random backbones (3×3 stride 1 for 28-32 px images).
        images: geometry of the images to probe; a random backbone takes its channels and
            input size from it (default: 1 channel, 28 px).

    Raises:
        ValueError: an unresolvable model URI (the message lists the registry's models and
            aliases) or an unknown backbone name.
        FileNotFoundError: a path that does not exist.
    """
    from sslflow.tracking import latest_registered_model, pin_model_uri  # lazy: mlflow is slow

    if not spec:
        latest = latest_registered_model(tracking_uri)
        if latest is None:
            log.warning(
                "no sslflow model is registered; probing a randomly initialised %s",
                fallback_backbone,
            )
            spec = RANDOM_PREFIX + fallback_backbone
        else:
            spec = latest
    if spec.startswith(RANDOM_PREFIX):
        in_chans, size = (images.channels, images.image_size()) if images else (1, 28)
        return ResolvedModel(
            random_backbone(spec[len(RANDOM_PREFIX) :], in_chans, size, small_stem=small_stem), spec
        )
    pinned = pin_model_uri(spec, tracking_uri)  # reports name the version, not a moving alias
    return ResolvedModel(load_backbone(pinned, tracking_uri=tracking_uri), pinned)


def training_summary(spec: str, tracking_uri: str | None) -> dict[str, str]:
    """Training run, method, backbone, image size, channels, epochs and curation of a model URI's
    pretraining run.

    Empty for checkpoint files and random backbones (nothing recorded to read).
    """
    from sslflow import tracking

    run_id = tracking.training_run_id(spec, tracking_uri)
    if run_id is None:
        return {}
    run = tracking.client(tracking_uri).get_run(run_id)
    params, tags = run.data.params, run.data.tags
    trained_on = tags.get("sslflow.trained_on", "")
    found = {
        "training run": run_id,
        "method": params.get("method"),
        "backbone": params.get("backbone"),
        "image size": f"{tags['sslflow.image_size']} px" if "sslflow.image_size" in tags else None,
        "channels": tags.get("sslflow.in_chans"),
        "epochs": params.get("epochs"),
        "curation": {"curated_shards": "curated shards", "raw_shards": "none (raw shards)"}.get(
            trained_on, trained_on
        ),
    }
    return {key: value for key, value in found.items() if value}


def random_copy(backbone: FrozenBackbone, seed: int = 0) -> FrozenBackbone:
    """A randomly initialised backbone of the same architecture and input format."""
    return random_backbone(
        backbone.name,
        backbone.in_chans,
        backbone.image_size,
        seed=seed,
        small_stem=backbone.small_stem,
    )


# --- features -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureEntry:
    """Where one extractor's cached train and test features are."""

    role: Role
    description: str
    fingerprint: str
    feature_dim: int
    train: str
    test: str

    def load(self) -> tuple[FeatureSet, FeatureSet]:
        return load_feature_set(self.train), load_feature_set(self.test)


@dataclass
class FeatureIndex:
    """The feature sets of one probing run: the model first, then the baselines."""

    entries: list[FeatureEntry]
    classes: list[str]
    train_content_hash: str
    test_content_hash: str
    extract_seconds: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = asdict(self)
        body["entries"] = [{**asdict(e), "role": e.role.value} for e in self.entries]
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(body, indent=2))
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> FeatureIndex:
        if not path.is_file():
            raise FileNotFoundError(f"no feature index at {path}: materialise probe_features first")
        body = json.loads(path.read_text())
        body["entries"] = [FeatureEntry(**{**e, "role": Role(e["role"])}) for e in body["entries"]]
        return cls(**body)

    def model(self) -> FeatureEntry:
        return self.entries[0]


def extractors(
    model: ResolvedModel, baselines: bool, pixels: RawPixels, seed: int = 0
) -> list[tuple[Role, Embedder, str, int | None]]:
    """(role, embedder, description, feature width) for the model and, if asked, the baselines."""
    backbone = model.backbone
    found: list[tuple[Role, Embedder, str, int | None]] = [
        (Role.MODEL, backbone, model.spec, backbone.feature_dim)
    ]
    if baselines:
        if not model.spec.startswith(RANDOM_PREFIX):
            found.append(
                (
                    Role.RANDOM_INIT,
                    random_copy(backbone, seed),
                    f"random {backbone.name}",
                    backbone.feature_dim,
                )
            )
        found.append((Role.RAW_PIXELS, pixels, f"raw pixels ({pixels.size}×{pixels.size})", None))
    return found


def extract_all(
    model: ResolvedModel,
    train: Manifest,
    test: Manifest,
    cache_root: Path,
    config: FeatureConfig = FeatureConfig(),
) -> FeatureIndex:
    """Extract (or reuse cached) train and test features of the model and its baselines."""
    if train.classes and test.classes and train.classes != test.classes:
        raise ValueError(
            f"train and test shards name different classes: {train.classes} vs {test.classes}"
        )
    entries, seconds = [], {}
    pixels = RawPixels.for_images(train)
    for role, embedder, description, dim in extractors(
        model, config.baselines, pixels, config.seed
    ):
        started = time.perf_counter()
        sets = [
            extract_features(
                embedder, manifest, cache_root, split, config.batch_size, config.num_workers, dim
            )
            for split, manifest in (("train", train), ("test", test))
        ]
        seconds[role.value] = time.perf_counter() - started
        entries.append(
            FeatureEntry(
                role,
                description,
                sets[0].fingerprint,
                sets[0].dim,
                str(sets[0].root),
                str(sets[1].root),
            )
        )
    classes = list(train.classes or test.classes or [])
    return FeatureIndex(entries, classes, train.content_hash, test.content_hash, seconds)


# --- probes ---------------------------------------------------------------------------------


def _num_classes(index: FeatureIndex, train: FeatureSet, test: FeatureSet) -> int:
    return len(index.classes) or int(max(train.labels.max(), test.labels.max())) + 1


def knn_probe(
    index: FeatureIndex, settings: Sequence[tuple[int, float]] = DEFAULT_SETTINGS
) -> list[ModelProbe]:
    """Weighted kNN of every feature set in ``index``."""
    probes = []
    for entry in index.entries:
        train, test = entry.load()
        started = time.perf_counter()
        results: list[KnnResult] = weighted_knn(
            torch.from_numpy(np.array(train.features)),
            torch.from_numpy(train.labels),
            torch.from_numpy(np.array(test.features)),
            torch.from_numpy(test.labels),
            settings,
            num_classes=_num_classes(index, train, test),
        )
        seconds = time.perf_counter() - started
        probes.append(
            ModelProbe(
                entry.role,
                entry.description,
                entry.fingerprint,
                entry.feature_dim,
                knn=results,
                seconds=seconds,
            )
        )
        log.info(
            "kNN %s: %s", entry.role.label, ", ".join(f"{r.name}={r.top1:.4f}" for r in results)
        )
    return probes


def linear_probe(index: FeatureIndex, config: LinearConfig = LinearConfig()) -> list[ModelProbe]:
    """The configured linear probes of every feature set in ``index``."""
    probes = []
    for entry in index.entries:
        train, test = entry.load()
        classes = _num_classes(index, train, test)
        started = time.perf_counter()
        results: list[LinearResult] = []
        for kind in config.kinds():
            if kind is LinearProbeKind.LOGISTIC:
                results.append(
                    logistic_regression_probe(
                        train.features,
                        train.labels,
                        test.features,
                        test.labels,
                        config.cs,
                        config.validation_fraction,
                        config.seed,
                        num_classes=classes,
                    )
                )
            else:
                results.append(
                    sgd_probe(
                        train.features,
                        train.labels,
                        test.features,
                        test.labels,
                        config.lrs,
                        config.sgd_epochs,
                        validation_fraction=config.validation_fraction,
                        seed=config.seed,
                        num_classes=classes,
                    )
                )
        seconds = time.perf_counter() - started
        probes.append(
            ModelProbe(
                entry.role,
                entry.description,
                entry.fingerprint,
                entry.feature_dim,
                linear=results,
                seconds=seconds,
            )
        )
        log.info(
            "linear %s: %s",
            entry.role.label,
            ", ".join(f"{r.kind.value}={r.top1:.4f}" for r in results),
        )
    return probes


# --- report ---------------------------------------------------------------------------------


def build_report_input(
    index: FeatureIndex,
    probes: list[ModelProbe],
    summary: Mapping[str, str],
    upstream: Sequence[RunLink] = (),
    earlier: Sequence[EarlierRun] = (),
) -> ReportInput:
    """The report's content from the feature index and the (merged) probe results."""
    train, test = index.model().load()
    classes = index.classes or [
        str(c) for c in range(int(max(train.labels.max(), test.labels.max())) + 1)
    ]
    return ReportInput(
        title=index.model().description,
        summary=summary,
        probes=probes,
        test_labels=np.asarray(test.labels),
        classes=classes,
        projection_features=np.asarray(test.features),
        projection_labels=np.asarray(test.labels),
        upstream=list(upstream),
        earlier=list(earlier),
    )


def log_report(run: RunLogger, report_html: Path) -> None:
    """Attach the report folder (HTML and every PNG) to the run under ``report/``."""
    for path in sorted(report_html.parent.iterdir()):
        if path.is_file():
            run.log_artifact(str(path), artifact_path="report")


def earlier_for(run: RunLogger) -> list[EarlierRun]:
    """Earlier probing runs of ``run``'s experiment, linked the way ``run.url`` is."""
    base = run.url.rsplit("/runs/", 1)[0]
    return earlier_runs(
        run.client, run.experiment_id, run.run_id, lambda run_id: f"{base}/runs/{run_id}"
    )


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
        return {name: value for probe in self.probes for name, value in probe.metrics().items()}


def run_probe(
    model_spec: str,
    train_shards: Manifest | str | Path,
    test_shards: Manifest | str | Path,
    out_dir: str | Path,
    config: ProbeConfig = ProbeConfig(),
    tracking_uri: str | None = None,
    cache_root: str | Path | None = None,
    run: RunLogger | None = None,
    fallback_backbone: str = "resnet10t",
) -> ProbeResult:
    """Probe a model on a labelled train/test pair of shard sets and write the report.

    Args:
        model_spec: see :func:`resolve_model` (``models:/sslflow-simclr@current``, a
            checkpoint path, ``random:resnet18``, or empty for the newest registered model).
        train_shards: labelled train shard set (manifest, or its folder / manifest.json).
        test_shards: labelled test shard set.
        out_dir: the report folder (``index.html`` and PNGs).
        config: probe settings.
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
    train = train_shards if isinstance(train_shards, Manifest) else Manifest.load(train_shards)
    test = test_shards if isinstance(test_shards, Manifest) else Manifest.load(test_shards)
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
    earlier = earlier_for(run) if run is not None else []
    report_input = build_report_input(index, probes, summary, earlier=earlier)
    report = render_report(report_input, out / "report", Projection(config.report.projection))
    result = ProbeResult(
        model.spec,
        probes,
        report,
        summary_markdown(report_input),
        index,
        time.perf_counter() - started,
    )
    if run is not None:
        run.set_tags(report_tags(index))
        run.log_params({"model": model.spec, **probe_params(config)})
        run.log_metrics({**result.metrics(), "wall_seconds": result.seconds})
        log_report(run, report)
    return result


def report_tags(index: FeatureIndex) -> dict[str, str]:
    """Tags that mark a run as a probing report (found later by ``earlier_runs``)."""
    return {
        REPORT_TAG: "true",
        MODEL_TAG: index.model().description,
        "sslflow.probe.fingerprint": index.model().fingerprint,
    }


def probe_params(config: ProbeConfig) -> dict[str, str]:
    """``ProbeConfig`` as MLflow params."""
    return {
        "knn_settings": ",".join(f"k{k}_t{t:g}" for k, t in config.knn.settings()),
        "linear": ",".join(config.linear.probes),
        "cs": ",".join(f"{c:g}" for c in config.linear.cs),
        "lrs": ",".join(f"{lr:g}" for lr in config.linear.lrs),
        "sgd_epochs": str(config.linear.sgd_epochs),
        "validation_fraction": str(config.linear.validation_fraction),
        "seed": str(config.linear.seed),
        "baselines": str(config.features.baselines),
    }
