"""``sslflow ui``: the Dagster UI and the MLflow UI on one sslflow home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_ui(home: str | None, host: str, dagster_port: int, mlflow_port: int) -> int:
    """Start ``dagster dev`` and ``mlflow ui`` on the same home; stop both on Ctrl-C."""
    from sslflow.cli.runner import dagster_home
    from sslflow.paths import sslflow_home

    root = sslflow_home(home)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SSLFLOW_HOME": str(root), "DAGSTER_HOME": str(dagster_home(root))}
    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"
    bin_dir = Path(sys.executable).parent
    dagster_cmd = [str(bin_dir / "dagster"), "dev", "-h", host, "-p", str(dagster_port)]
    dagster_cmd += (
        ["-w", str(workspace)] if workspace.exists() else ["-m", "sslflow.pipelines.definitions"]
    )
    mlflow_cmd = [
        str(bin_dir / "mlflow"),
        "ui",
        "--host",
        host,
        "--port",
        str(mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "mlartifacts").as_uri(),
    ]
    processes = [
        subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in (dagster_cmd, mlflow_cmd)
    ]
    print(
        (
            f"Dagster UI: http://{host}:{dagster_port}\nMLflow UI:  "
            f"http://{host}:{mlflow_port}\n(Ctrl-C stops both)"
        ),
        flush=True,
    )
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    return 0
