"""Dagster resources: the sslflow home and MLflow tracking with explicit run ids."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from sslflow.paths import git_commit, sslflow_home

UPSTREAM_TAG = "sslflow.upstream."
RUN_ID_KEY = "mlflow_run_id"


class SslflowHome(dg.ConfigurableResource):
    """Root folder for big artifacts (shards, memmaps, checkpoints); empty means $SSLFLOW_HOME or ./.sslflow."""

    root: str = ""

    def path(self) -> Path:
        return sslflow_home(self.root or None)

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        """Where an asset writes its files: ``<home>/<asset>[/<partition>]``."""
        folder = self.path() / asset
        return folder / partition if partition else folder


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id through an ``MlflowClient`` (no global fluent state)."""

    client: Any
    run_id: str
    experiment_id: str
    url: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        batch = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_shard_input(self, name: str, manifest: Any, context: str) -> None:
        """Record a shard set this run read as an MLflow dataset input (MLflow's lineage view).

        ``manifest`` is a ``sslflow.data.Manifest``; its content hash is the dataset's digest, so
        runs that read the same shards show the same dataset.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

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


class MLflowTracking(dg.ConfigurableResource):
    """MLflow over ``MlflowClient`` with explicit run ids.

    Defaults need no server: the tracking store is ``<home>/mlflow.db`` (SQLite) and artifacts go
    to ``<home>/mlartifacts``. Point ``tracking_uri`` at a server to share runs.
    """

    tracking_uri: str = ""
    experiment_name: str = "sslflow"
    artifact_root: str = ""
    home: str = ""
    ui_url: str = "http://127.0.0.1:5000"

    def resolved_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{sslflow_home(self.home or None) / 'mlflow.db'}"

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        home = sslflow_home(self.home or None)
        home.mkdir(parents=True, exist_ok=True)
        uri = self.resolved_uri()
        # Explicit registry URI: MlflowClient otherwise takes the process-global one, which
        # mlflow.pytorch.log_model sets for whatever store logged the last model.
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        location = None
        if not self.resolved_uri().startswith(("http://", "https://")):
            root = self.artifact_root or str(sslflow_home(self.home or None) / "mlartifacts")
            location = root if "://" in root else Path(root).resolve().as_uri()
        try:
            return client.create_experiment(self.experiment_name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first
            return client.get_experiment_by_name(self.experiment_name).experiment_id

    def check_reachable(self, timeout: float = 10.0) -> None:
        """Fail before any work when a tracking server cannot be reached, naming the URI.

        A plain GET of ``/health`` with a short timeout: MlflowClient itself retries with
        backoff for minutes before giving up.
        """
        uri = self.resolved_uri()
        if not uri.startswith(("http://", "https://")):
            return
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise dg.Failure(
                f"MLflow tracking server {uri} is unreachable ({exc}); start it or fix "
                "MLflowTracking.tracking_uri"
            ) from exc

    @contextlib.contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext | None,
        run_name: str,
        upstream: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[TrackedRun]:
        """One MLflow run for one asset materialisation, ended FAILED if the body raises.

        Tags: Dagster run id, asset key, partition, git commit and upstream MLflow run ids.
        """
        self.check_reachable()
        client = self.client()
        experiment_id = self.experiment_id(client)
        all_tags = {"git.commit": git_commit(), "sslflow.stage": run_name, **(tags or {})}
        if context is not None:
            all_tags["dagster.run_id"] = context.run_id
            if isinstance(context, dg.AssetExecutionContext):
                all_tags["dagster.asset_key"] = context.asset_key.to_user_string()
                if context.has_partition_key:
                    all_tags["dagster.partition"] = context.partition_key
        for asset, run_id in (upstream or {}).items():
            all_tags[UPSTREAM_TAG + asset] = run_id
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        tracked = TrackedRun(
            client=client,
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            url=f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run.info.run_id}",
        )
        try:
            yield tracked
        except BaseException:
            client.set_terminated(tracked.run_id, status="FAILED")
            raise
        client.set_terminated(tracked.run_id, status="FINISHED")


def latest_metadata(context: dg.AssetExecutionContext, asset: str, key: str) -> Any:
    """Value of ``key`` in the latest materialisation metadata of ``asset`` (None if absent)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    materialization = event.asset_materialization if event else None
    entry = materialization.metadata.get(key) if materialization else None
    return entry.value if entry is not None else None


def upstream_run_ids(context: dg.AssetExecutionContext, assets: list[str]) -> dict[str, str]:
    """MLflow run ids recorded in the latest materialisation metadata of ``assets``."""
    found = {asset: latest_metadata(context, asset, RUN_ID_KEY) for asset in assets}
    return {asset: str(run_id) for asset, run_id in found.items() if run_id is not None}


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
