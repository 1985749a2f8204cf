"""Configuration picks the resources and the executor; the assets stay the same.

``SSLFLOW_DEPLOYMENT`` selects one of:

- ``local`` (default): MLflow on ``<home>/mlflow.db``, steps in local processes.
- ``server``: MLflow at ``$MLFLOW_TRACKING_URI``, the sslflow home at ``$SSLFLOW_HOME`` (a shared
  volume), Dagster storage from ``$DAGSTER_HOME/dagster.yaml`` (see deploy/dagster.yaml).
- ``k8s``: as ``server``, with every step in its own Kubernetes job (``k8s_job_executor``);
  multi-process training and k-means run ``torchrun`` in a pod of their own through
  ``dagster_k8s.PipesK8sClient`` (the ``torchrun`` resource is a :class:`K8sTorchrun`).

Locally and on a server the ``torchrun`` resource is a :class:`SubprocessTorchrun`: the ranks
are subprocesses of the step.
"""

import os
from enum import Enum
from typing import Any

import dagster as dg

from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.torchrun import K8sTorchrun, SubprocessTorchrun


class Deployment(str, Enum):
    LOCAL = "local"
    SERVER = "server"
    K8S = "k8s"


def current_deployment() -> Deployment:
    name = os.environ.get("SSLFLOW_DEPLOYMENT", Deployment.LOCAL.value)
    try:
        return Deployment(name)
    except ValueError:
        valid = ", ".join(d.value for d in Deployment)
        raise ValueError(
            f"SSLFLOW_DEPLOYMENT={name!r} is not a deployment; valid: {valid}"
        ) from None


def resources_for(deployment: Deployment) -> dict[str, Any]:
    if deployment is Deployment.LOCAL:
        return {"home": SslflowHome(), "mlflow": MLflowTracking(), "torchrun": SubprocessTorchrun()}
    return {
        "home": SslflowHome(root=dg.EnvVar("SSLFLOW_HOME")),
        "mlflow": MLflowTracking(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")),
        "torchrun": K8sTorchrun() if deployment is Deployment.K8S else SubprocessTorchrun(),
    }


def executor_for(deployment: Deployment) -> dg.ExecutorDefinition | None:
    """``k8s_job_executor`` on Kubernetes (configured per run, see deploy/k8s/run_config.yaml)."""
    if deployment is Deployment.K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None
