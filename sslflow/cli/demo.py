"""``make demo``: every asset on the embedded default, sized for 2 CPU cores.

The demo never downloads: it uses Fashion-MNIST where it is installed (``make demo`` installs
Debian's package when it can) and otherwise scikit-learn's bundled digits, which run every
stage the same way at 8×8 px.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from sslflow.data.datasets import fashion_mnist_dir
from sslflow.paths import sslflow_home

DEMO_SOURCES = ("auto", "fashion-mnist", "digits")


@dataclass(frozen=True)
class DemoSource:
    """The source the demo uses and why."""

    source: str
    reason: str


def choose_demo_source(requested: str = "auto") -> DemoSource:
    """``auto``: Fashion-MNIST when found locally, else scikit-learn's digits (offline fallback)."""
    if requested not in DEMO_SOURCES:
        raise ValueError(f"unknown demo source {requested!r}; valid: {', '.join(DEMO_SOURCES)}")
    found = fashion_mnist_dir()
    if requested == "digits":
        return DemoSource("digits", "scikit-learn's bundled digits (1,797 8×8 images), as asked")
    if found is not None:
        return DemoSource("fashion-mnist", f"Fashion-MNIST found in {found}")
    if requested == "fashion-mnist":
        raise ValueError(
            "Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` or set SSLFLOW_DATA, "
            "or run `sslflow demo --source digits`"
        )
    return DemoSource(
        "digits",
        "Fashion-MNIST not found locally: falling back to scikit-learn's bundled digits (1,797 8×8 "
        "images). `apt-get install dataset-fashion-mnist` or set SSLFLOW_DATA to use "
        "Fashion-MNIST.",
    )


def demo_run_config(choice: DemoSource) -> dict[str, dict[str, Any]]:
    """Per-asset config of the demo: small enough for 2 CPU cores (about 4 minutes).

    Geometry (image size, channels) is left to ``auto`` everywhere: it follows the data.
    """
    fashion = choice.source == "fashion-mnist"
    source = {"source": choice.source}
    pretrain: dict[str, Any] = {"epochs": 2, "samples_per_epoch": 16384, "warmup_epochs": 0.5}
    if not fashion:  # 1,437 training digits: a shorter epoch, a smaller batch
        pretrain.update(samples_per_epoch=4096, batch_size=128)
    config: dict[str, dict[str, Any]] = {
        "raw_shards": {**source, "split": "train" if fashion else "all"},
        "eval_split": source,
        "pretrained_model": pretrain,
    }
    if not fashion:  # 1,797 digits: levels sized to the pool, a subset of it
        config["kmeans_hierarchy"] = {"levels": [[100, 3, 5], [10, 3, 3]]}
        config["curated_index"] = {"target_size": 1000}
    return config


def run_demo(
    home: str | None = None, source: str = "auto", debug: bool = False
) -> dg.ExecuteInProcessResult:
    """Materialise every unpartitioned asset and print where to look.

    A failed step raises only with ``debug``; otherwise the failed result is returned (its
    stack traces stay in the Dagster run) for the caller to report.
    """
    from sslflow.cli.runner import dagster_home, materialize_assets
    from sslflow.pipelines.definitions import defs

    root = sslflow_home(home)
    choice = choose_demo_source(source)
    print(f"sslflow demo: {choice.reason}")
    started = time.perf_counter()
    graph = defs.resolve_asset_graph()
    assets = sorted(  # partitioned assets (the inbox) run per partition, from their sensor
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is None
    )
    result = materialize_assets(
        assets,
        demo_run_config(choice),
        home=root,
        tags={"sslflow/demo": "true"},
        raise_on_error=debug,
        brief_errors=not debug,
    )
    minutes = (time.perf_counter() - started) / 60
    print(_summary(result, root, dagster_home(root), minutes))
    return result


def _summary(result: Any, root: Path, dagster: Path, minutes: float) -> str:
    from sslflow.cli.checks import check_lines

    lines = [f"\nsslflow demo finished in {minutes:.1f} min (Dagster run {result.run_id})."]
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        samples = meta.get("samples")
        shown = f"{samples.value} samples" if samples is not None else ""
        run = meta.get("mlflow_run_id")
        lines.append(
            f"  {event.asset_key.to_user_string():<18} {shown:<16} MLflow run "
            f"{run.value if run else '-'}"
        )
        headline = {k: v.value for k, v in meta.items() if k.endswith("_top1")}
        if headline:
            lines.append(
                "    top-1: "
                + ", ".join(f"{k.removesuffix('_top1')} {v:.3f}" for k, v in headline.items())
            )
        balance = meta.get("class_balance")
        if balance is not None:
            lines.append(f"    {balance.value}")
        report = meta.get("report")
        if report is not None:
            lines.append(f"    report: {report.value}")
    checks = check_lines(result)
    lines += ["Asset checks:", *(f"  {line}" for line in checks)] if checks else []
    lines += [
        f"Files:   {root}",
        f"MLflow:  sqlite:///{root / 'mlflow.db'} (artifacts in {root / 'mlartifacts'})",
        f"Dagster: DAGSTER_HOME={dagster}",
        (
            "Look:    `make ui`, then open http://127.0.0.1:3000 (Dagster) and "
            "http://127.0.0.1:5000 (MLflow)."
        ),
    ]
    return "\n".join(lines)
