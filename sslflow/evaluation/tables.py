"""The comparison table of a probing run, shared by the HTML page and the markdown summaries.

One column per kNN setting and linear probe present, one row per feature extractor (then
earlier runs' models), so every view of the results shows the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sslflow.evaluation.index import FeatureIndex
from sslflow.evaluation.knn import DEFAULT_TEMPERATURE
from sslflow.evaluation.linear import LinearProbeKind
from sslflow.evaluation.report_runs import EarlierRun
from sslflow.evaluation.results import HEADLINE_K, ModelProbe, Role

Column = tuple[str, Callable[[Mapping[str, float], str], str]]


def _metric(name: str, hyper: str | None = None) -> Callable[[Mapping[str, float], str], str]:
    def cell(metrics: Mapping[str, float], role: str) -> str:
        value = metrics.get(f"{role}.{name}")
        if value is None:
            return "–"
        extra = metrics.get(f"{role}.{hyper}") if hyper else None
        if hyper is None or extra is None:
            return f"{value:.4f}"
        return f"{value:.4f} ({hyper.rsplit('.', 1)[-1]}={extra:g})"

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


def comparison_rows(
    probes: Sequence[ModelProbe], earlier: Sequence[EarlierRun] = ()
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: this run's model and baselines, then earlier runs' models."""
    columns = comparison_columns(probes)
    header = ["features", *[name for name, _ in columns]]
    rows = []
    for probe in probes:
        metrics = probe.metrics()
        rows.append([probe.role.label, *[cell(metrics, probe.role.value) for _, cell in columns]])
    for run in earlier:
        rows.append(
            [
                f"earlier: {run.run.label}",
                *[cell(run.metrics, Role.MODEL.value) for _, cell in columns],
            ]
        )
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def probe_table(probes: Sequence[ModelProbe]) -> str:
    """The comparison table of ``probes`` alone, as markdown."""
    return markdown_table(*comparison_rows(probes))


def feature_table(index: FeatureIndex) -> str:
    """Each extractor's source, width, fingerprint and extraction seconds, as markdown."""
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
