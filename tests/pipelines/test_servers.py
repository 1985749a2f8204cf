"""Real servers on 127.0.0.1: dagster-webserver (GraphQL, launching a run) and mlflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port
from sslflow.pipelines.assets.data import raw_shards
from sslflow.pipelines.resources import MLflowTracking, SslflowHome

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (servers spawn workers that outlive the main PID)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture()
def server_env(sslflow_home: Path, tmp_path: Path) -> dict[str, str]:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    # Launch runs straight from the webserver: the default queued coordinator needs the daemon.
    (dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    return {**os.environ, "SSLFLOW_HOME": str(sslflow_home), "DAGSTER_HOME": str(dagster_home)}


@pytest.fixture()
def webserver(server_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", process, timeout=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(process)
        log.close()


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def test_webserver_serves_the_asset_graph_and_launches_a_run(
    webserver: str, sslflow_home: Path
) -> None:
    nodes = graphql(webserver, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")[
        "assetNodes"
    ]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert {"raw_shards", "eval_split"} <= keys

    repos = graphql(
        webserver,
        "{ repositoriesOrError { ... on RepositoryConnection "
        "{ nodes { name location { name } } } } }",
    )
    repo = repos["repositoriesOrError"]["nodes"][0]
    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["raw_shards"]}],
        },
        "runConfigData": {"ops": {"raw_shards": {"config": {"source": "digits", "split": "test"}}}},
        "mode": "default",
    }
    launched = graphql(webserver, LAUNCH, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + 240
    status = "QUEUED"
    while time.monotonic() < deadline and status not in ("SUCCESS", "FAILURE", "CANCELED"):
        time.sleep(2)
        run = graphql(
            webserver,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )
        status = run["runOrError"]["status"]
    assert status == "SUCCESS"
    assert (sslflow_home / "raw_shards" / "manifest.json").is_file()


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp_path / "mlflow.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process, timeout=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(process)
        log.close()


def test_stage_tracks_into_a_real_mlflow_server(mlflow_server: str, sslflow_home: Path) -> None:
    tracking = MLflowTracking(tracking_uri=mlflow_server, home=str(sslflow_home))
    result = dg.materialize(
        [raw_shards],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"home": SslflowHome(root=str(sslflow_home)), "mlflow": tracking},
        run_config={"ops": {"raw_shards": {"config": {"source": "digits", "split": "test"}}}},
    )
    run_id = result.asset_materializations_for_node("raw_shards")[0].metadata["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(str(run_id))
    assert run.data.metrics["samples"] == 360 and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "raw_shards")] == [
        "raw_shards/manifest.json"
    ]
    assert not (sslflow_home / "mlflow.db").exists()


def test_unreachable_tracking_server_fails_before_any_work(sslflow_home: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(dg.Failure, match=f"MLflow tracking server {uri} is unreachable"):
        dg.materialize(
            [raw_shards],
            instance=dg.DagsterInstance.ephemeral(),
            resources={
                "home": SslflowHome(root=str(sslflow_home)),
                "mlflow": MLflowTracking(tracking_uri=uri),
            },
            run_config={"ops": {"raw_shards": {"config": {"source": "digits"}}}},
        )
    assert not (sslflow_home / "raw_shards").exists()
