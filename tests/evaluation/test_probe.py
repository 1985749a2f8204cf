"""run_probe end to end on real Fashion-MNIST shards, with and without an MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslflow.evaluation.config import KnnConfig, LinearConfig, ProbeConfig
from sslflow.evaluation.linear import LinearProbeKind
from sslflow.evaluation.probe import run_probe
from sslflow.evaluation.resolve import resolve_model
from sslflow.evaluation.results import Role

FAST = ProbeConfig(
    knn=KnnConfig(ks=(20,)),  # and lightly's k=200, T=0.1
    linear=LinearConfig(
        probes=("sgd",), lrs=(0.01, 0.1), sgd_epochs=2
    ),  # logistic is tested on its own
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ResNet saved in sslflow's checkpoint format (seed 3, unlike the baseline's 0)."""
    from sslflow.models import random_backbone, save_backbone

    return save_backbone(
        random_backbone("test_resnet", small_stem=False, seed=3),
        tmp_path_factory.mktemp("ckpt") / "backbone.pt",
    )


def test_run_probe_logs_metrics_report_and_earlier_runs(
    fmnist_subset, checkpoint: Path, sslflow_home: Path
) -> None:
    from sslflow.pipelines.resources import MLflowTracking

    tracking = MLflowTracking(home=str(sslflow_home))
    with tracking.start_run(None, "probe") as first_run:
        first = run_probe(
            str(checkpoint),
            fmnist_subset.train,
            fmnist_subset.test,
            sslflow_home / "p1",
            FAST,
            run=first_run,
        )
    assert [p.role for p in first.probes] == [Role.MODEL, Role.RANDOM_INIT, Role.RAW_PIXELS]
    raw = first.probes[2]
    # 2,000 train images: raw-pixel kNN is a little below the full-data 0.846 (k=20, T=0.07).
    assert 0.70 < raw.knn[0].top1 < 0.90
    assert raw.linear_result(LinearProbeKind.SGD).chosen in FAST.linear.lrs
    assert first.report.is_file() and "| raw pixels |" in first.markdown

    client = tracking.client()
    logged = client.get_run(first_run.run_id).data
    assert logged.metrics["raw_pixels.knn.k20_t0.07.top1"] == pytest.approx(raw.knn[0].top1)
    assert "model.linear.sgd.lr" in logged.metrics and logged.params["model"] == str(checkpoint)
    artifacts = {Path(a.path).name for a in client.list_artifacts(first_run.run_id, "report")}
    assert {"index.html", "knn_vs_k.png", "confusion.png", "projection.png"} <= artifacts

    with tracking.start_run(None, "probe") as second_run:
        second = run_probe(
            str(checkpoint),
            fmnist_subset.train,
            fmnist_subset.test,
            sslflow_home / "p2",
            FAST,
            cache_root=sslflow_home / "p1" / "features",
            run=second_run,
        )
    assert second.metrics() == first.metrics()  # cached features, seeded probes
    assert first_run.run_id in second.report.read_text()  # the first run is listed as earlier


def test_unresolvable_model_uri_lists_the_registry(sslflow_home: Path) -> None:
    uri = f"sqlite:///{sslflow_home / 'mlflow.db'}"
    with pytest.raises(ValueError, match="Registered models: no registered models"):
        resolve_model("models:/sslflow-simclr@current", tracking_uri=uri)


def test_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a file nor an MLflow model URI"):
        resolve_model(str(tmp_path / "nope.pt"))


def test_empty_spec_without_registered_model_probes_a_random_backbone(sslflow_home: Path) -> None:
    uri = f"sqlite:///{sslflow_home / 'mlflow.db'}"
    resolved = resolve_model("", tracking_uri=uri, fallback_backbone="test_resnet")
    assert resolved.spec == "random:test_resnet"
    assert resolved.backbone.name == "test_resnet"
