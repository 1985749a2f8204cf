"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here.

Everything is collected from its module (assets with their checks from ``assets/``, jobs from
``jobs``, schedules from ``schedules``, sensors from ``sensors``): a new definition needs no
list to be added to. Only the resources and the executor depend on the deployment.
"""

from types import ModuleType
from typing import TypeVar

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sslflow.pipelines import jobs, schedules, sensors
from sslflow.pipelines.assets import curation, data, embeddings, inbox, pretraining, probing
from sslflow.pipelines.deployments import (
    Deployment,
    current_deployment,
    executor_for,
    resources_for,
)

T = TypeVar("T")

ASSET_MODULES = (data, embeddings, curation, pretraining, probing, inbox)
ASSETS = dg.load_assets_from_modules(ASSET_MODULES)
CHECKS = dg.load_asset_checks_from_modules(ASSET_MODULES)


def defined_in(module: ModuleType, kind: type[T]) -> list[T]:
    """The module-level definitions of ``kind`` in ``module``, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, kind)]


def build_definitions(deployment: Deployment | None = None) -> dg.Definitions:
    """Everything sslflow defines, with the resources and executor of ``deployment``."""
    chosen = deployment or current_deployment()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=defined_in(jobs, UnresolvedAssetJobDefinition),
        schedules=defined_in(schedules, dg.ScheduleDefinition),
        sensors=defined_in(sensors, dg.SensorDefinition),
        resources=resources_for(chosen),
        executor=executor_for(chosen),
    )


defs = build_definitions()
