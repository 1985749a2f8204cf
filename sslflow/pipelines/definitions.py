"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from sslflow.pipelines.assets import data
from sslflow.pipelines.resources import MLflowTracking, SslflowHome

defs = dg.Definitions(
    assets=[*data.ASSETS],
    resources={"home": SslflowHome(), "mlflow": MLflowTracking()},
)
