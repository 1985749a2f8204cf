"""The probing report: an HTML page with plots, and its markdown summary for metadata.

The report puts the model's kNN and linear accuracies next to two baselines probed the same
way on the same split (raw pixels, a randomly initialised copy of the backbone) and next to
earlier probing runs of the same MLflow experiment. Every image the HTML references is
written beside it, so the folder can be opened in a browser or attached to an MLflow run.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslflow.evaluation.linear import classification_summary
from sslflow.evaluation.plots import (
    Projection,
    headline_predictions,
    plot_accuracy_vs_k,
    plot_confusion,
    plot_per_class,
    plot_projection,
)
from sslflow.evaluation.report_runs import EarlierRun, RunLink
from sslflow.evaluation.results import ModelProbe
from sslflow.evaluation.tables import comparison_rows, markdown_table

REPORT_NAME = "index.html"


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


def summary_markdown(report: ReportInput) -> str:
    """The comparison table and headline numbers as markdown (Dagster metadata, MLflow note)."""
    header, rows = comparison_rows(report.probes, report.earlier)
    lines = [f"**{report.title}**", ""]
    lines += [f"- {key}: {value}" for key, value in report.summary.items()]
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


def write_plots(
    report: ReportInput, folder: Path, projection: Projection = Projection.PCA
) -> dict[str, Path]:
    """Write the report's PNGs into ``folder``; returns caption → path."""
    plots: dict[str, Path] = {}
    if any(p.knn for p in report.probes):
        plots["kNN accuracy against k"] = plot_accuracy_vs_k(report.probes, folder / "knn_vs_k.png")
    plots["per-class accuracy"] = plot_per_class(
        report.probes, report.test_labels, list(report.classes), folder / "per_class_accuracy.png"
    )
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
    header, rows = comparison_rows(report.probes, report.earlier)
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
