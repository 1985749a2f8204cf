"""The probing report: an HTML page with plots, and a markdown summary for Dagster metadata.

The report puts the model's kNN and linear accuracies next to two baselines probed the same
way on the same split (raw pixels, a randomly initialised copy of the backbone) and next to
earlier probing runs of the same MLflow experiment. Every image the HTML references is
written beside it, so the folder can be opened in a browser or attached to an MLflow run.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sslflow.evaluation.knn import DEFAULT_TEMPERATURE, LIGHTLY_SETTING
from sslflow.evaluation.linear import LinearProbeKind, classification_summary
from sslflow.evaluation.results import HEADLINE_K, ModelProbe, Role, knn_metric

log = logging.getLogger(__name__)

REPORT_NAME = "index.html"
PROJECTION_POINTS = 2000
REPORT_TAG = "sslflow.probe.report"  # "true" on runs that hold a whole probing report
MODEL_TAG = "sslflow.probe.model"  # the probed model spec on those runs


class Projection(str, Enum):
    """How test features are projected to 2-D for the scatter plot."""

    PCA = "pca"
    TSNE = "tsne"  # scikit-learn t-SNE: ~10-30 s on 2k points on 2 CPU cores


@dataclass(frozen=True)
class RunLink:
    """An MLflow run shown in the report: what it is, its id and a link to it."""

    label: str
    run_id: str
    url: str


@dataclass(frozen=True)
class EarlierRun:
    """A previous probing run of the same experiment, with its logged metrics."""

    run: RunLink
    started: str
    metrics: Mapping[str, float]


@dataclass
class ReportInput:
    """Everything the report shows.

    Attributes:
        title: page title, e.g. the model URI.
        summary: label → value rows (data, curation, method, epochs, wall time ...).
        probes: model first, then baselines.
        test_labels: (N_test,) int64 true classes (for per-class accuracy).
        classes: class names, index → name.
        projection_features: (N, D) float test features of the model for the 2-D plot.
        projection_labels: (N,) classes of those rows.
        upstream: MLflow runs this report derives from.
        earlier: earlier probing runs of the same experiment, newest first.
    """

    title: str
    summary: Mapping[str, str]
    probes: Sequence[ModelProbe]
    test_labels: np.ndarray
    classes: Sequence[str]
    projection_features: np.ndarray | None = None
    projection_labels: np.ndarray | None = None
    upstream: Sequence[RunLink] = field(default_factory=list)
    earlier: Sequence[EarlierRun] = field(default_factory=list)


def headline_predictions(probe: ModelProbe) -> tuple[str, np.ndarray] | None:
    """The classifier whose errors the report plots: logistic, else SGD linear, else kNN k=20."""
    for kind in (LinearProbeKind.LOGISTIC, LinearProbeKind.SGD):
        result = probe.linear_result(kind)
        if result is not None:
            return f"linear ({kind.value})", result.predictions
    knn = probe.headline_knn()
    return (f"kNN k={knn.k_requested}", knn.predictions) if knn else None


# --- tables ---------------------------------------------------------------------------------

Column = tuple[str, Callable[[Mapping[str, float], str], str]]


def _metric(name: str, hyper: str | None = None) -> Callable[[Mapping[str, float], str], str]:
    def cell(metrics: Mapping[str, float], role: str) -> str:
        value = metrics.get(f"{role}.{name}")
        if value is None:
            return "–"
        extra = metrics.get(f"{role}.{hyper}") if hyper else None
        return f"{value:.4f}" + (
            f" ({hyper.rsplit('.', 1)[-1]}={extra:g})" if extra is not None else ""
        )

    return cell


def comparison_columns(probes: Sequence[ModelProbe]) -> list[Column]:
    """Columns for every kNN setting and linear probe present in ``probes``."""
    settings = sorted(
        {(r.k_requested, r.temperature) for p in probes for r in p.knn}, key=lambda s: (s[1], s[0])
    )
    columns: list[Column] = [
        (f"kNN k={k} T={t:g}", _metric(f"knn.k{k}_t{t:g}.top1")) for k, t in settings
    ]
    if (HEADLINE_K, DEFAULT_TEMPERATURE) in settings:
        columns.append(
            (
                f"kNN k={HEADLINE_K} top-5",
                _metric(f"knn.k{HEADLINE_K}_t{DEFAULT_TEMPERATURE:g}.top5"),
            )
        )
    for kind in LinearProbeKind:
        hyper = next(
            (r.hyperparameter.value for p in probes for r in p.linear if r.kind is kind), None
        )
        if hyper:
            columns.append(
                (
                    f"linear {kind.value}",
                    _metric(f"linear.{kind.value}.top1", f"linear.{kind.value}.{hyper}"),
                )
            )
    return columns


def comparison_rows(report: ReportInput) -> tuple[list[str], list[list[str]]]:
    """Header and rows: this run's model and baselines, then earlier runs' models."""
    columns = comparison_columns(report.probes)
    header = ["features", *[name for name, _ in columns]]
    rows = []
    for probe in report.probes:
        metrics = probe.metrics()
        rows.append([probe.role.label, *[cell(metrics, probe.role.value) for _, cell in columns]])
    for earlier in report.earlier:
        rows.append(
            [
                f"earlier: {earlier.run.label}",
                *[cell(earlier.metrics, Role.MODEL.value) for _, cell in columns],
            ]
        )
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(report: ReportInput) -> str:
    """The comparison table and headline numbers as markdown (Dagster metadata, MLflow note)."""
    header, rows = comparison_rows(report)
    lines = [f"**{report.title}**", ""]
    lines += [f"- {key}: {value}" for key, value in report.summary.items()]
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------


def plot_accuracy_vs_k(probes: Sequence[ModelProbe], path: Path) -> Path:
    """kNN top-1 against k at T=0.07 per feature extractor (T=0.1 at k=200 as a hollow marker)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for probe in probes:
        results = sorted(
            (r for r in probe.knn if r.temperature == DEFAULT_TEMPERATURE),
            key=lambda r: r.k_requested,
        )
        line = axes.plot(
            [r.k_requested for r in results],
            [r.top1 for r in results],
            marker="o",
            label=probe.role.label,
        )
        lightly = [r for r in probe.knn if (r.k_requested, r.temperature) == LIGHTLY_SETTING]
        for r in lightly:
            axes.plot(
                [r.k_requested], [r.top1], marker="s", fillstyle="none", color=line[0].get_color()
            )
    axes.set_xscale("log")
    axes.set_xlabel("k (neighbours)")
    axes.set_ylabel("top-1 accuracy")
    axes.set_title(f"weighted kNN, T={DEFAULT_TEMPERATURE:g} (squares: k=200, T=0.1)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100)
    return path


def plot_per_class(report: ReportInput, path: Path) -> Path:
    """Per-class test accuracy of each extractor's headline classifier, as grouped bars."""
    classes = list(report.classes)
    figure = Figure(figsize=(max(6, 0.7 * len(classes)), 4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(report.probes), 1)
    for i, probe in enumerate(report.probes):
        chosen = headline_predictions(probe)
        if chosen is None:
            continue
        name, predictions = chosen
        per_class, _ = classification_summary(report.test_labels, predictions, len(classes))
        axes.bar(
            np.arange(len(classes)) + i * width,
            per_class,
            width,
            label=f"{probe.role.label}: {name}",
        )
    axes.set_xticks(
        np.arange(len(classes)) + width * (len(report.probes) - 1) / 2,
        classes,
        rotation=45,
        ha="right",
    )
    axes.set_ylim(0, 1.18)  # headroom for the legend above the bars
    axes.set_ylabel("accuracy")
    axes.set_title("per-class test accuracy")
    axes.legend(fontsize="small", loc="upper center", ncol=len(report.probes))
    figure.savefig(path, dpi=100)
    return path


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised (C, C) confusion matrix (rows: true class) with counts in the cells."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.6 * len(classes))
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    if len(classes) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            axes.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[row, col] > 0.5 else "black",
            )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.savefig(path, dpi=100)
    return path


def project_2d(
    features: np.ndarray, method: Projection = Projection.PCA, seed: int = 0
) -> np.ndarray:
    """(N, D) → (N, 2) by PCA, or t-SNE initialised from PCA."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if method is Projection.TSNE:
        from sklearn.manifold import TSNE

        return TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=min(30.0, len(x) - 1)
        ).fit_transform(x)
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def plot_projection(
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    path: Path,
    method: Projection = Projection.PCA,
    max_points: int = PROJECTION_POINTS,
    seed: int = 0,
) -> Path:
    """Scatter of at most ``max_points`` test features (a seeded subset) in 2-D, coloured by class."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(features), size=min(max_points, len(features)), replace=False))
    points = project_2d(np.asarray(features[rows]), method, seed)
    figure = Figure(figsize=(6.5, 5), layout="constrained")
    axes = figure.subplots()
    for index, name in enumerate(classes):
        mask = labels[rows] == index
        axes.scatter(points[mask, 0], points[mask, 1], s=6, label=name)
    axes.set_title(f"test features, {method.value.upper()} ({len(rows)} points)")
    axes.legend(fontsize="small", markerscale=2, loc="best")
    figure.savefig(path, dpi=100)
    return path


# --- HTML -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.model td { font-weight: bold; }
img { max-width: 100%; margin: 0.5rem 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(28rem, 1fr)); gap: 1rem; }
"""


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], first_row_class: str = ""
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{first_row_class}"' if i == 0 and first_row_class else ""
        body.append(
            f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _link(run: RunLink) -> str:
    return (
        f'{html.escape(run.label)}: <a href="{html.escape(run.url)}">{html.escape(run.run_id)}</a>'
    )


def write_plots(
    report: ReportInput, folder: Path, projection: Projection = Projection.PCA
) -> dict[str, Path]:
    """Write the report's PNGs into ``folder``; returns caption → path."""
    plots: dict[str, Path] = {}
    if any(p.knn for p in report.probes):
        plots["kNN accuracy against k"] = plot_accuracy_vs_k(report.probes, folder / "knn_vs_k.png")
    plots["per-class accuracy"] = plot_per_class(report, folder / "per_class_accuracy.png")
    model = report.probes[0]
    chosen = headline_predictions(model)
    if chosen is not None:
        name, predictions = chosen
        _, confusion = classification_summary(report.test_labels, predictions, len(report.classes))
        title = f"{model.role.label}: {name}"
        plots[f"confusion matrix, {title}"] = plot_confusion(
            confusion, report.classes, title, folder / "confusion.png"
        )
    if report.projection_features is not None and report.projection_labels is not None:
        plots["2-D projection of test features"] = plot_projection(
            report.projection_features,
            report.projection_labels,
            report.classes,
            folder / "projection.png",
            projection,
        )
    return plots


def render_report(
    report: ReportInput, folder: str | Path, projection: Projection = Projection.PCA
) -> Path:
    """Write ``index.html`` and its PNGs into ``folder``; returns the HTML path.

    Args:
        report: what to show (the first probe is the model under test).
        folder: created if missing; plots are written beside the HTML.
        projection: PCA (default, instant) or t-SNE for the scatter plot.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not report.probes:
        raise ValueError("a probing report needs at least one probe result")
    plots = write_plots(report, folder, projection)
    header, rows = comparison_rows(report)
    summary_rows = [[key, value] for key, value in report.summary.items()]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Probing report: {html.escape(report.title)}</h1>",
        "<h2>Summary</h2>",
        _html_table(["", ""], summary_rows),
    ]
    if report.upstream:
        parts.append("<p>Upstream MLflow runs:</p><ul>")
        parts += [f"<li>{_link(run)}</li>" for run in report.upstream]
        parts.append("</ul>")
    parts += [
        "<h2>Accuracy on the test split</h2>",
        (
            "<p>Weighted kNN (cosine similarity, votes exp(sim/T)) and linear probes "
            "(hyper-parameter chosen on a seeded 10% validation split of train, then refit on all "
            "of train). Baselines are probed the same way on the same split.</p>"
        ),
        _html_table(header, rows, first_row_class="model"),
    ]
    if report.earlier:
        parts.append("<p>Earlier runs:</p><ul>")
        parts += [f"<li>{_link(e.run)} ({html.escape(e.started)})</li>" for e in report.earlier]
        parts.append("</ul>")
    parts.append('<h2>Plots</h2><div class="plots">')
    for caption, path in plots.items():
        parts.append(
            f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div></body></html>")
    target = folder / REPORT_NAME
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


# --- earlier runs ---------------------------------------------------------------------------


def earlier_runs(
    client: Any,
    experiment_id: str,
    exclude_run_id: str | None,
    run_url: Callable[[str], str],
    limit: int = 10,
) -> list[EarlierRun]:
    """Earlier probing-report runs of the experiment (tagged ``REPORT_TAG``), newest first.

    Args:
        client: an ``MlflowClient``.
        experiment_id: the experiment to search.
        exclude_run_id: this run (not earlier than itself).
        run_url: run id → link to the run in the MLflow UI.
        limit: how many to return.
    """
    from sslflow.tracking import earlier_runs as tagged_runs  # lazy: mlflow is slow to import

    runs = tagged_runs(
        client,
        experiment_id,
        {REPORT_TAG: "true"},
        exclude_run_id,
        limit,
        with_metric=knn_metric(Role.MODEL),
    )
    found = []
    for run in runs:
        label = run.data.tags.get(MODEL_TAG) or run.info.run_name or run.info.run_id[:8]
        started = np.datetime64(run.info.start_time, "ms").astype("datetime64[s]").astype(str)
        found.append(
            EarlierRun(
                RunLink(label, run.info.run_id, run_url(run.info.run_id)),
                started,
                dict(run.data.metrics),
            )
        )
    return found
