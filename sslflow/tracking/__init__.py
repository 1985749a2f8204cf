"""MLflow tracking through explicit clients (plain Python, no Dagster).

The one place that talks to MLflow's tracking store: the client factory, runs addressed by id
(:class:`TrackedRun`), the experiment store (:class:`TrackingStore`) and searches for earlier
runs. The model registry and logged models are in :mod:`sslflow.tracking.registry`. No
function sets MLflow's process-global tracking or registry URI: every call names its store, so
two stores in one process never mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    Run,
    RunTag,
)
from mlflow.exceptions import MlflowException


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer its health check."""


def client(tracking_uri: str | None) -> MlflowClient:
    """An ``MlflowClient`` whose registry is the tracking store itself.

    The explicit registry URI matters: without it MlflowClient takes the process-global one.
    """
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """Link to a run in the MLflow UI."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id through an ``MlflowClient`` (no global fluent state)."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    url: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested mappings become dotted names; batches of 100 (MLflow's limit per call)."""
        batch = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        log_metrics(self.client, self.run_id, metrics, step or 0)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        """Every file directly in ``folder`` (a report and its plots) under ``artifact_path``."""
        for path in sorted(folder.iterdir()):
            if path.is_file():
                self.log_artifact(path, artifact_path)

    def log_shard_input(self, name: str, manifest: Any, context: str) -> None:
        """Record a shard set this run read as an MLflow dataset input (MLflow's lineage view).

        ``manifest`` is a ``sslflow.data.Manifest``; its content hash is the dataset's digest, so
        runs that read the same shards show the same dataset.
        """
        dataset = Dataset(
            name=name,
            digest=manifest.content_hash[:36],
            source_type="webdataset",
            source=json.dumps(
                {"uri": Path(manifest.root or ".").as_uri(), "content_hash": manifest.content_hash}
            ),
            profile=json.dumps({"samples": manifest.total_samples, "shards": len(manifest.shards)}),
        )
        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])

    def log_dict(self, body: Mapping[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / name
            target.write_text(json.dumps(body, indent=2, default=str))
            self.log_artifact(target)


def log_metrics(
    client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0
) -> None:
    """Log ``metrics`` at ``step`` in batches of 1000 (MLflow's limit per call)."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


def metrics_hook(tracking_uri: str, run_id: str) -> Callable[[dict[str, float], int], None]:
    """``hook(metrics, step)`` logging to an existing run (training's rank 0 under torchrun)."""
    store = client(tracking_uri)
    return lambda metrics, step: log_metrics(store, run_id, metrics, step)


@dataclass(frozen=True)
class TrackingStore:
    """An MLflow store and the experiment sslflow's runs go to.

    Attributes:
        tracking_uri: tracking and registry URI (``sqlite:///…`` or a server).
        experiment_name: created on first use.
        artifact_root: artifact location of a new experiment on a local store (a server
            chooses its own); a path or URI.
        ui_url: base URL of the MLflow UI, for run links.
    """

    tracking_uri: str
    experiment_name: str = "sslflow"
    artifact_root: str = ""
    ui_url: str = "http://127.0.0.1:5000"

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def client(self) -> MlflowClient:
        return client(self.tracking_uri)

    def experiment_id(self, mlflow_client: MlflowClient | None = None) -> str:
        """The experiment's id, creating it (with ``artifact_root`` on local stores) if needed."""
        store = mlflow_client or self.client()
        found = store.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if not self.is_server and self.artifact_root:
            root = self.artifact_root
            location = root if "://" in root else Path(root).resolve().as_uri()
        try:
            return store.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:
            created = store.get_experiment_by_name(self.experiment_name)
            if created is None:
                raise
            return str(created.experiment_id)  # another process created it first

    def check_reachable(self, timeout: float = 10.0) -> None:
        """Fail fast, naming the URI, when a tracking server does not answer.

        A plain GET of ``/health`` with a short timeout: MlflowClient itself retries with
        backoff for minutes before giving up.

        Raises:
            TrackingUnreachable: the server did not answer within ``timeout`` seconds.
        """
        if not self.is_server:
            return
        try:
            with urllib.request.urlopen(
                self.tracking_uri.rstrip("/") + "/health", timeout=timeout
            ) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnreachable(
                f"MLflow tracking server {self.tracking_uri} is unreachable ({exc})"
            ) from exc

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[TrackedRun]:
        """A new run of the experiment, ended FINISHED, or FAILED if the body raises."""
        self.check_reachable()
        store = self.client()
        experiment_id = self.experiment_id(store)
        run_id = store.create_run(experiment_id, tags=dict(tags), run_name=run_name).info.run_id
        tracked = TrackedRun(
            store, run_id, experiment_id, run_url(self.ui_url, experiment_id, run_id)
        )
        try:
            yield tracked
        except BaseException:
            store.set_terminated(run_id, status="FAILED")
            raise
        store.set_terminated(run_id, status="FINISHED")


def earlier_runs(
    mlflow_client: MlflowClient,
    experiment_id: str,
    tags: Mapping[str, str],
    exclude_run_id: str | None = None,
    limit: int = 10,
    finished_only: bool = False,
    with_metric: str | None = None,
) -> list[Run]:
    """Runs of the experiment carrying ``tags``, newest first, at most ``limit``.

    Args:
        mlflow_client: the store to search.
        experiment_id: the experiment.
        tags: tag values every run must have.
        exclude_run_id: the asking run (not earlier than itself).
        limit: how many to return.
        finished_only: only runs that ended FINISHED.
        with_metric: only runs that logged this (non-negative) metric.
    """
    clauses = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    if finished_only:
        clauses.append("attributes.status = 'FINISHED'")
    if with_metric:
        clauses.append(f"metrics.`{with_metric}` >= 0")
    found = mlflow_client.search_runs(
        [experiment_id],
        filter_string=" and ".join(clauses),
        order_by=["attributes.start_time DESC"],
        max_results=limit + 1,
    )
    return [run for run in found if run.info.run_id != exclude_run_id][:limit]


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
