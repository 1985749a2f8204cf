"""Dagster resources: the sslflow home and MLflow tracking (:mod:`sslflow.tracking`) with
Dagster's run tags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg

from sslflow.paths import git_commit, sslflow_home
from sslflow.tracking import MlflowClient, TrackedRun, TrackingStore, TrackingUnreachable

UPSTREAM_TAG = "sslflow.upstream."


class SslflowHome(dg.ConfigurableResource):
    """Root folder for big artifacts (shards, memmaps, checkpoints); empty means $SSLFLOW_HOME,
    else ./.sslflow."""

    root: str = ""

    def path(self) -> Path:
        return sslflow_home(self.root or None)

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        """Where an asset writes its files: ``<home>/<asset>[/<partition>]``."""
        folder = self.path() / asset
        return folder / partition if partition else folder


class MLflowTracking(dg.ConfigurableResource):
    """MLflow for assets: a :class:`~sslflow.tracking.TrackingStore` plus Dagster's run tags.

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

    def store(self) -> TrackingStore:
        """The store this resource names (creating the sslflow home a local store lives in)."""
        home = sslflow_home(self.home or None)
        home.mkdir(parents=True, exist_ok=True)
        return TrackingStore(
            self.resolved_uri(),
            self.experiment_name,
            self.artifact_root or str(home / "mlartifacts"),
            self.ui_url,
        )

    def client(self) -> MlflowClient:
        return self.store().client()

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

        Raises:
            dg.Failure: a tracking server is unreachable (before any work starts).
        """
        all_tags = {"git.commit": git_commit(), "sslflow.stage": run_name, **(tags or {})}
        if context is not None:
            all_tags["dagster.run_id"] = context.run_id
            if isinstance(context, dg.AssetExecutionContext):
                all_tags["dagster.asset_key"] = context.asset_key.to_user_string()
                if context.has_partition_key:
                    all_tags["dagster.partition"] = context.partition_key
        for asset, run_id in (upstream or {}).items():
            all_tags[UPSTREAM_TAG + asset] = run_id
        store = self.store()
        try:
            store.check_reachable()
        except TrackingUnreachable as exc:
            raise dg.Failure(f"{exc}; start it or fix MLflowTracking.tracking_uri") from exc
        with store.start_run(run_name, all_tags) as run:
            yield run
