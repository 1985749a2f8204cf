"""Pretraining from the command line and on torchrun ranks: ``python -m sslflow.ssl.launch``.

Every rank runs :func:`main` with the same arguments; :func:`launch_arguments` writes the
config file they name, so a launcher (the pipelines' torchrun resource, or a shell running
``torchrun --nproc_per_node=N -m sslflow.ssl.launch …``) needs only the argument list. Rank 0
logs each step's metrics to this module's logger and, when the arguments name an MLflow run,
to that run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sslflow.data import Manifest
from sslflow.ssl.callbacks import MetricsHook
from sslflow.ssl.config import PretrainConfig
from sslflow.ssl.train import PretrainResult, pretrain

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pretrain a backbone on WebDataset shards (one process per rank)."
    )
    parser.add_argument("--config", required=True, help="JSON file with PretrainConfig fields")
    parser.add_argument("--data", required=True, help="manifest.json or shard folder")
    parser.add_argument(
        "--run-dir", required=True, help="run folder (resumed if it has a checkpoint)"
    )
    parser.add_argument("--force", action="store_true", help="resume even if the config changed")
    parser.add_argument(
        "--tracking-uri", default="", help="MLflow tracking URI for per-step metrics (rank 0)"
    )
    parser.add_argument("--mlflow-run-id", default="", help="existing MLflow run to log metrics to")
    parser.add_argument(
        "--knn-train", default="", help="labelled shards (manifest) for the kNN monitor's bank"
    )
    parser.add_argument(
        "--knn-test", default="", help="labelled shards (manifest) for the kNN monitor's queries"
    )
    return parser.parse_args(argv)


def launch_arguments(
    config: PretrainConfig,
    data: Path,
    run_dir: Path,
    tracking_uri: str = "",
    mlflow_run_id: str = "",
    force: bool = False,
    knn: tuple[Path, Path] | None = None,
) -> list[str]:
    """Write ``run_dir/launch_config.json``; the arguments :func:`main` takes on every rank."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "launch_config.json"
    config_path.write_text(json.dumps(config.to_dict(), indent=2))
    arguments = ["--config", str(config_path), "--data", str(data), "--run-dir", str(run_dir)]
    arguments += ["--tracking-uri", tracking_uri, "--mlflow-run-id", mlflow_run_id]
    if force:
        arguments.append("--force")
    if knn is not None:
        arguments += ["--knn-train", str(knn[0]), "--knn-test", str(knn[1])]
    return arguments


def _log_step(metrics: dict[str, float], step: int) -> None:
    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


def _rank_zero_hook(args: argparse.Namespace) -> MetricsHook:
    """Logs each step's metrics, and to the MLflow run when the arguments name one."""
    if not (args.tracking_uri and args.mlflow_run_id):
        return _log_step
    from sslflow.tracking import metrics_hook  # lazy: only rank 0 of a tracked run logs

    to_mlflow = metrics_hook(args.tracking_uri, args.mlflow_run_id)

    def hook(metrics: dict[str, float], step: int) -> None:
        to_mlflow(metrics, step)
        _log_step(metrics, step)

    return hook


def main(
    argv: Sequence[str] | None = None, on_metrics: MetricsHook | None = None
) -> PretrainResult:
    """Entry point for ``python -m sslflow.ssl.launch`` and ``torchrun -m sslflow.ssl.launch``.

    Rank 0 logs each step's metrics (to ``sslflow.ssl.train``'s logger, and to the MLflow run
    ``--mlflow-run-id`` when given) unless ``on_metrics`` replaces that.
    """
    args = parse_args(argv)
    config = PretrainConfig.from_dict(json.loads(Path(args.config).read_text()))
    if on_metrics is None and int(os.environ.get("RANK", "0")) == 0:
        on_metrics = _rank_zero_hook(args)
    knn_data = (
        (Manifest.load(args.knn_train), Manifest.load(args.knn_test))
        if args.knn_train and args.knn_test
        else None
    )
    result = pretrain(
        config, args.data, args.run_dir, on_metrics=on_metrics, knn_data=knn_data, force=args.force
    )
    log.info(
        "trained %d steps in %.0f s, loss %.4f", result.steps, result.seconds, result.final_loss
    )
    return result


if __name__ == "__main__":
    main()
