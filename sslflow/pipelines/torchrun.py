"""The ``torchrun`` resource: how an asset launches a core entry point on several ranks.

``torchrun --nproc_per_node=N -m sslflow.pipelines.torchrun_rank <module> <args>`` runs a core
entry point (``sslflow.ssl.train``, ``sslflow.curation.distributed``) on N ranks under Dagster
Pipes; rank 0 streams its logs back to the asset. The deployment chooses where the ranks run
(:func:`sslflow.pipelines.deployments.resources_for`): :class:`SubprocessTorchrun` on the
asset's own machine (local, server), :class:`K8sTorchrun` in a pod of its own (k8s). The rank
side lives in :mod:`sslflow.pipelines.torchrun_rank`, which imports ``dagster_pipes`` only:
this module defines Dagster resources, so importing it imports ``dagster``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

RANK_MODULE = "sslflow.pipelines.torchrun_rank"


def torchrun_command(
    python: str, module: str, arguments: Sequence[str], nproc_per_node: int, nnodes: int = 1
) -> list[str]:
    """``python -m torch.distributed.run … -m sslflow.pipelines.torchrun_rank module args``."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc_per_node}",
        f"--nnodes={nnodes}",
        "--standalone" if nnodes == 1 else "--rdzv-backend=c10d",
        "-m",
        RANK_MODULE,
        module,
        *arguments,
    ]


class TorchrunLauncher(dg.ConfigurableResource):
    """Runs a core entry point on torchrun ranks under Dagster Pipes (see the subclasses)."""

    def run_module(
        self,
        context: dg.AssetExecutionContext,
        module: str,
        arguments: Sequence[str],
        nproc_per_node: int,
        nnodes: int = 1,
        gpus: int = 0,
    ) -> None:
        """Run ``module.main(arguments)`` on ``nproc_per_node`` ranks; returns when all end.

        ``gpus`` is what the ranks need in all (a pod's GPU limit; local ranks see this host's).
        """
        raise NotImplementedError


class SubprocessTorchrun(TorchrunLauncher):
    """torchrun as a subprocess of the asset's process (``PipesSubprocessClient``)."""

    def run_module(
        self,
        context: dg.AssetExecutionContext,
        module: str,
        arguments: Sequence[str],
        nproc_per_node: int,
        nnodes: int = 1,
        gpus: int = 0,
    ) -> None:
        command = torchrun_command(sys.executable, module, arguments, nproc_per_node, nnodes)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        dg.PipesSubprocessClient().run(command=command, context=context, env=env)


class K8sTorchrun(TorchrunLauncher):
    """torchrun in a Kubernetes pod of its own (``dagster_k8s.PipesK8sClient``).

    The pod mounts the sslflow home's volume where the step has it, so the paths in the ranks'
    arguments mean the same files, and inherits the step's MLflow and sslflow settings.
    """

    image: str = ""
    namespace: str = "sslflow"
    volume_claim: str = "sslflow-home"
    mount_path: str = "/data/sslflow"
    env_vars: list[str] = Field(
        default_factory=lambda: ["SSLFLOW_HOME", "MLFLOW_TRACKING_URI", "SSLFLOW_DEPLOYMENT"],
        description="variables of the step's environment the pod inherits",
    )
    python: str = "python"
    load_incluster_config: bool = True
    kubeconfig_file: str = ""

    def pod_spec(self, gpus: int) -> dict[str, Any]:
        """The pod's volume, its mount and (when ``gpus``) its GPU limit."""
        container: dict[str, Any] = {
            "volume_mounts": [{"name": "sslflow-home", "mount_path": self.mount_path}]
        }
        if gpus:
            container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        return {
            "volumes": [
                {
                    "name": "sslflow-home",
                    "persistent_volume_claim": {"claim_name": self.volume_claim},
                }
            ],
            "containers": [container],
        }

    def run_module(
        self,
        context: dg.AssetExecutionContext,
        module: str,
        arguments: Sequence[str],
        nproc_per_node: int,
        nnodes: int = 1,
        gpus: int = 0,
    ) -> None:
        from dagster_k8s import PipesK8sClient

        client = PipesK8sClient(
            load_incluster_config=self.load_incluster_config,
            kubeconfig_file=self.kubeconfig_file or None,
        )
        env = {name: os.environ[name] for name in self.env_vars if name in os.environ}
        client.run(
            context=context,
            image=self.image or os.environ.get("DAGSTER_CURRENT_IMAGE"),
            command=torchrun_command(self.python, module, arguments, nproc_per_node, nnodes),
            namespace=self.namespace,
            env={**env, "PYTHONUNBUFFERED": "1"},
            base_pod_spec=self.pod_spec(gpus),
        )
