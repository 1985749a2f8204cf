"""The one probe-report writer: content from the cached features and probes, page, MLflow run.

``run_probe`` and the ``probing_report`` asset both write their report through
:func:`write_probe_report`, so the page, its tags, params, metrics and artifacts agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslflow.evaluation.config import ReportConfig
from sslflow.evaluation.index import FeatureIndex
from sslflow.evaluation.plots import Projection
from sslflow.evaluation.report import ReportInput, render_report, summary_markdown
from sslflow.evaluation.report_runs import (
    EarlierRun,
    RunLink,
    RunLogger,
    earlier_reports,
    report_tags,
    run_links,
)
from sslflow.evaluation.results import ModelProbe, probe_metrics


def build_report_input(
    index: FeatureIndex,
    probes: Sequence[ModelProbe],
    summary: Mapping[str, str],
    upstream: Sequence[RunLink] = (),
    earlier: Sequence[EarlierRun] = (),
) -> ReportInput:
    """The report's content from the feature index and the (merged) probe results.

    The model's (N_test, D) test features feed the projection; class names default to
    ``0 … C-1`` when the shards name none.

    Raises:
        FileNotFoundError: the model's cached features are gone.
    """
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


def write_probe_report(
    index: FeatureIndex,
    probes: Sequence[ModelProbe],
    summary: Mapping[str, str],
    folder: Path,
    config: ReportConfig | None = None,
    run: RunLogger | None = None,
    params: Mapping[str, Any] | None = None,
    upstream: Mapping[str, str] | None = None,
) -> tuple[Path, str]:
    """Render the report into ``folder`` and, given a run, log it there.

    Args:
        index: the probed features (the model first).
        probes: merged kNN and linear results, model first, then baselines.
        summary: label → value rows at the top of the page.
        folder: the report folder (``index.html`` and PNGs).
        config: projection and how many earlier reports to compare (default
            ``ReportConfig()``).
        run: when given, earlier reports of its experiment are compared, ``upstream`` is
            linked, and the run gets the report tags, ``params``, every probe metric and the
            report folder as artifacts under ``report/``.
        params: MLflow params of the run.
        upstream: label → MLflow run id of the runs the report derives from.

    Returns:
        The HTML page and the summary as markdown.

    Raises:
        FileNotFoundError: the model's cached features are gone.
    """
    config = config or ReportConfig()
    links = run_links(run, upstream or {}) if run is not None else []
    earlier = earlier_reports(run, config.earlier_runs) if run is not None else []
    report = build_report_input(index, probes, summary, links, earlier)
    page = render_report(report, folder, Projection(config.projection))
    if run is not None:
        run.set_tags(report_tags(index))
        run.log_params(params or {})
        run.log_metrics(probe_metrics(probes))
        run.log_folder(page.parent, "report")  # the HTML and every PNG
    return page, summary_markdown(report)
