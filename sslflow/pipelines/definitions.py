"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from sslflow.pipelines import jobs, sensors
from sslflow.pipelines.assets import curation, data, inbox, pretraining, probing
from sslflow.pipelines.deployments import (
    Deployment,
    current_deployment,
    executor_for,
    resources_for,
)

ASSETS = [*data.ASSETS, *curation.ASSETS, *pretraining.ASSETS, *probing.ASSETS, *inbox.ASSETS]
CHECKS = [*curation.CHECKS, *probing.CHECKS]


def build_definitions(deployment: Deployment | None = None) -> dg.Definitions:
    """Everything sslflow defines, with the resources and executor of ``deployment``."""
    chosen = deployment or current_deployment()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[*jobs.JOBS, *sensors.JOBS],
        schedules=jobs.SCHEDULES,
        sensors=sensors.SENSORS,
        resources=resources_for(chosen),
        executor=executor_for(chosen),
    )


defs = build_definitions()
