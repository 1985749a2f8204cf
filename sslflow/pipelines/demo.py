"""``make demo``: every asset on the embedded default, sized for 2 CPU cores."""

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslflow.data.sources import fashion_mnist_dir
from sslflow.paths import sslflow_home

FASHION_MNIST_MIRROR = ("ossci-datasets.s3.amazonaws.com", 443)  # torchvision's first mirror


@dataclass(frozen=True)
class DemoSource:
    """The source the demo uses and why."""

    source: str
    download: bool
    reason: str


def _online(address: tuple[str, int] = FASHION_MNIST_MIRROR, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def choose_demo_source() -> DemoSource:
    """Fashion-MNIST found locally, else downloaded when online, else scikit-learn's digits."""
    found = fashion_mnist_dir()
    if found is not None:
        return DemoSource("fashion-mnist", False, f"Fashion-MNIST found in {found}")
    if _online():
        return DemoSource("fashion-mnist", True, "Fashion-MNIST not found locally; downloading it with torchvision")
    return DemoSource(
        "digits",
        False,
        "Fashion-MNIST not found locally and the machine is offline: falling back to "
        "scikit-learn's bundled digits (1,797 8×8 images). `apt-get install dataset-fashion-mnist` "
        "or set SSLFLOW_DATA to use Fashion-MNIST.",
    )


def demo_run_config(choice: DemoSource) -> dict[str, dict[str, Any]]:
    """Per-asset config of the demo: small enough for 2 CPU cores."""
    source = {"source": choice.source, "download": choice.download}
    return {
        "raw_shards": {**source, "split": "train" if choice.source == "fashion-mnist" else "all"},
        "eval_split": source,
    }


def run_demo(home: str | None = None) -> int:
    """Materialise every asset defined so far and print where to look."""
    from sslflow.pipelines.definitions import defs
    from sslflow.pipelines.runner import dagster_home, materialize_assets

    root = sslflow_home(home)
    choice = choose_demo_source()
    print(f"sslflow demo: {choice.reason}")
    started = time.perf_counter()
    graph = defs.resolve_asset_graph()
    assets = sorted(  # partitioned assets (the inbox) run per partition, from their sensor
        key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is None
    )
    result = materialize_assets(assets, demo_run_config(choice), home=root, tags={"sslflow/demo": "true"})
    minutes = (time.perf_counter() - started) / 60
    print(_summary(result, root, dagster_home(root), minutes))
    return 0 if result.success else 1


def _summary(result: Any, root: Path, dagster: Path, minutes: float) -> str:
    lines = [f"\nsslflow demo finished in {minutes:.1f} min (Dagster run {result.run_id})."]
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        samples = meta.get("samples")
        shown = f"{samples.value} samples" if samples is not None else ""
        run = meta.get("mlflow_run_id")
        lines.append(f"  {event.asset_key.to_user_string():<18} {shown:<16} MLflow run {run.value if run else '-'}")
        headline = {k: v.value for k, v in meta.items() if k.endswith("_top1")}
        if headline:
            lines.append("    top-1: " + ", ".join(f"{k.removesuffix('_top1')} {v:.3f}" for k, v in headline.items()))
        report = meta.get("report")
        if report is not None:
            lines.append(f"    report: {report.value}")
    lines += [
        f"Files:   {root}",
        f"MLflow:  sqlite:///{root / 'mlflow.db'} (artifacts in {root / 'mlartifacts'})",
        f"Dagster: DAGSTER_HOME={dagster}",
        "Look:    `make ui`, then open http://127.0.0.1:3000 (Dagster) and http://127.0.0.1:5000 (MLflow).",
    ]
    return "\n".join(lines)
