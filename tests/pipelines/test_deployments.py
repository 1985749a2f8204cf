"""Scale-out configuration that one machine can check: instance YAML, k8s run config, docs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from sslflow.cli.reference import config_reference_markdown, definitions_reference_markdown
from sslflow.pipelines.definitions import build_definitions
from sslflow.pipelines.deployments import Deployment, current_deployment
from sslflow.pipelines.torchrun import K8sTorchrun, SubprocessTorchrun

ROOT = Path(__file__).resolve().parents[2]


def test_postgres_instance_config_validates() -> None:
    config, _ = dagster_instance_config(str(ROOT / "deploy"))
    assert "postgres_db" in config["storage"]["postgres"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_k8s_definitions_load_and_run_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("SSLFLOW_HOME", "/data/sslflow")
    defs = build_definitions(Deployment.K8S)
    job = defs.resolve_job_def("full_pipeline")
    assert job.executor_def.name == "k8s"
    assert set(defs.resources or {}) == {"home", "mlflow", "torchrun"}  # each one used
    launcher = (defs.resources or {})["torchrun"]
    assert isinstance(launcher, K8sTorchrun)
    assert (launcher.namespace, launcher.volume_claim, launcher.mount_path) == (
        "sslflow",
        "sslflow-home",
        "/data/sslflow",
    )
    assert "MLFLOW_TRACKING_URI" in launcher.env_vars
    local = build_definitions(Deployment.LOCAL).resources or {}
    assert type(local["torchrun"]) is SubprocessTorchrun
    run_config = yaml.safe_load((ROOT / "deploy" / "k8s" / "run_config.yaml").read_text())
    resolved = dg.validate_run_config(job, run_config)["execution"]["k8s"]
    assert resolved["job_namespace"] == "sslflow"
    assert (
        resolved["per_step_k8s_config"]["pretrained_model"]["container_config"]["resources"][
            "limits"
        ]["nvidia.com/gpu"]
        == "1"
    )


def test_unknown_deployment_lists_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLFLOW_DEPLOYMENT", "mars")
    with pytest.raises(ValueError, match="local, server, k8s"):
        current_deployment()


@pytest.mark.parametrize(
    ("page", "flag", "render"),
    [
        ("configuration.md", "--markdown", config_reference_markdown),
        ("definitions.md", "--definitions", definitions_reference_markdown),
    ],
)
def test_reference_pages_match_the_code(
    page: str, flag: str, render: Callable[[dg.Definitions], str]
) -> None:
    generated = render(build_definitions(Deployment.LOCAL))
    assert (ROOT / "docs" / page).read_text() == generated, (
        f"docs/{page} is stale: regenerate it with `sslflow assets {flag} > docs/{page}`"
    )
