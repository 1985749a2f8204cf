"""The MLflow side of probing reports: the run a report logs through, its tags and its links.

Tags mark a run as a whole probing report so later reports find it (``earlier_reports``);
links lead from a report to the runs it derives from and to earlier reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sslflow.evaluation.index import FeatureIndex
from sslflow.evaluation.results import Role, knn_metric

REPORT_TAG = "sslflow.probe.report"  # "true" on runs that hold a whole probing report
MODEL_TAG = "sslflow.probe.model"  # the probed model spec
FINGERPRINT_TAG = "sslflow.probe.fingerprint"  # the probed model's feature fingerprint


class RunLogger(Protocol):
    """The part of an MLflow run handle the probe logs through (``TrackedRun`` provides it)."""

    run_id: str
    experiment_id: str
    url: str
    client: Any

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_folder(self, folder: Path, artifact_path: str) -> None: ...


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


def feature_tags(index: FeatureIndex) -> dict[str, str]:
    """Tags naming the probed model and its features (every probing run that extracts them)."""
    return {MODEL_TAG: index.model().description, FINGERPRINT_TAG: index.model().fingerprint}


def report_tags(index: FeatureIndex) -> dict[str, str]:
    """Tags that mark a run as a probing report (found later by :func:`earlier_reports`)."""
    return {REPORT_TAG: "true", **feature_tags(index)}


def _ui_url(run: RunLogger) -> str:
    """The MLflow UI base of ``run.url``, so other runs are linked the same way."""
    from sslflow.tracking import run_url  # lazy: mlflow is slow to import

    return run.url.removesuffix(run_url("", run.experiment_id, run.run_id))


def run_links(run: RunLogger, run_ids: Mapping[str, str]) -> list[RunLink]:
    """Links to the runs ``run`` derives from (label → run id), in the UI ``run`` is shown in."""
    from sslflow.tracking import run_url

    ui_url = _ui_url(run)
    return [
        RunLink(
            label, run_id, run_url(ui_url, run.client.get_run(run_id).info.experiment_id, run_id)
        )
        for label, run_id in run_ids.items()
    ]


def earlier_reports(run: RunLogger, limit: int = 10) -> list[EarlierRun]:
    """Earlier probing-report runs of ``run``'s experiment (tagged ``REPORT_TAG``), newest first."""
    from sslflow.tracking import earlier_runs, run_url

    ui_url = _ui_url(run)
    found = []
    for earlier in earlier_runs(
        run.client,
        run.experiment_id,
        {REPORT_TAG: "true"},
        run.run_id,
        limit,
        with_metric=knn_metric(Role.MODEL),
    ):
        info = earlier.info
        label = earlier.data.tags.get(MODEL_TAG) or info.run_name or info.run_id[:8]
        started = np.datetime64(info.start_time, "ms").astype("datetime64[s]").astype(str)
        link = RunLink(label, info.run_id, run_url(ui_url, run.experiment_id, info.run_id))
        found.append(EarlierRun(link, started, dict(earlier.data.metrics)))
    return found
