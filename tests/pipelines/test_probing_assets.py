"""The probing assets materialise in process: features, kNN, linear probe, report and check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pytest

from sslflow.data import write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist
from sslflow.evaluation.results import Role, load_probes, save_probes
from sslflow.pipelines.assets import probing
from sslflow.pipelines.assets.probing import PROBES_FILE, knn_beats_raw_pixels, probe_features
from sslflow.pipelines.resources import SslflowHome

ASSETS = dg.load_assets_from_modules([probing])
CHECKS = dg.load_asset_checks_from_modules([probing])
RUN_CONFIG = {
    "knn_probe": {"config": {"ks": [10, 20]}},
    "linear_probe": {"config": {"probes": ["sgd"], "lrs": [0.01, 0.1], "sgd_epochs": 2}},
}


def _subset(split: str, count: int, labelled: bool = True) -> ArraySource:
    full = fashion_mnist(split=split)
    return ArraySource(
        full.name,
        full.images[:count],
        full.labels[:count] if labelled else None,
        full.key_prefix,
        {**full.origin, "head": count},
        full.classes if labelled else None,
    )


def write_eval_split(home: Path, train: int = 600, test: int = 200, labelled: bool = True) -> None:
    """What eval_split writes (``<home>/eval_split/train|test``) from a Fashion-MNIST slice."""
    for split, count in (("train", train), ("test", test)):
        write_shards(
            _subset(split, count, labelled),
            home / "eval_split" / split,
            shard_size=300,
            progress=False,
        )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sslflow.models import random_backbone, save_backbone

    return save_backbone(
        random_backbone("test_resnet", small_stem=False, seed=3),
        tmp_path_factory.mktemp("ckpt") / "backbone.pt",
    )


def _check_with_roles_swapped(home: Path) -> bool:
    """knn_beats_raw_pixels on the probes file with the model's and raw pixels' roles exchanged."""
    path = home / "knn_probe" / PROBES_FILE
    swap = {Role.MODEL: Role.RAW_PIXELS, Role.RAW_PIXELS: Role.MODEL}
    probes = [dataclasses.replace(p, role=swap.get(p.role, p.role)) for p in load_probes(path)]
    save_probes(probes, path)
    return knn_beats_raw_pixels(home=SslflowHome(root=str(home))).passed


def test_probing_assets_materialise(sslflow_home: Path, resources: dict, checkpoint: Path) -> None:
    write_eval_split(sslflow_home)
    config = {**RUN_CONFIG, "probe_features": {"config": {"model": str(checkpoint)}}}
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        instance=dg.DagsterInstance.ephemeral(),
        resources=resources,
        run_config={"ops": config},
    )
    assert result.success
    by_asset = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert set(by_asset) == {"probe_features", "knn_probe", "linear_probe", "probing_report"}
    assert by_asset["probe_features"]["feature_dim"].value == 96
    raw_knn = by_asset["knn_probe"]["raw_pixels_knn_k20_top1"].value
    assert 0.6 < raw_knn < 0.9  # 600 train images: below the full-data 0.846
    assert "| raw pixels |" in by_asset["linear_probe"]["table"].value
    assert "| random init |" in by_asset["probing_report"]["summary"].value

    (check,) = result.get_asset_check_evaluations()
    assert (
        check.check_name == "knn_beats_raw_pixels" and check.severity is dg.AssetCheckSeverity.WARN
    )
    model_knn = by_asset["knn_probe"]["model_knn_k20_top1"].value
    assert check.metadata["raw_pixels.knn.k20_t0.07.top1"].value == pytest.approx(raw_knn)
    assert check.metadata["model.knn.k20_t0.07.top1"].value == pytest.approx(model_knn, abs=1e-4)
    assert check.passed == (model_knn > raw_knn)
    assert _check_with_roles_swapped(sslflow_home) is not check.passed

    report = Path(by_asset["probing_report"]["report"].value)
    assert report.is_file() and (report.parent / "confusion.png").is_file()
    client = resources["mlflow"].client()
    run_id = by_asset["probing_report"]["mlflow_run_id"].value
    run = client.get_run(run_id)
    assert run.data.metrics["raw_pixels.knn.k20_t0.07.top1"] == pytest.approx(raw_knn)
    assert (
        run.data.tags["sslflow.upstream.knn_probe"] == by_asset["knn_probe"]["mlflow_run_id"].value
    )
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "report")} >= {
        "index.html",
        "projection.png",
    }
    linear = client.get_run(by_asset["linear_probe"]["mlflow_run_id"].value).data.metrics
    assert linear["model.linear.sgd.lr"] in (0.01, 0.1)


def test_unlabelled_eval_split_fails_naming_shards(sslflow_home: Path, resources: dict) -> None:
    write_eval_split(sslflow_home, train=40, test=20, labelled=False)
    with pytest.raises(dg.Failure, match=r"shard-000000\.tar.*carry no labels"):
        dg.materialize(
            [probe_features],
            instance=dg.DagsterInstance.ephemeral(),
            resources=resources,
            run_config={"ops": {"probe_features": {"config": {"model": "random:test_resnet"}}}},
        )


def test_unknown_model_uri_fails_listing_the_registry(sslflow_home: Path, resources: dict) -> None:
    write_eval_split(sslflow_home, train=40, test=20)
    with pytest.raises(dg.Failure, match="Registered models: no registered models"):
        dg.materialize(
            [probe_features],
            instance=dg.DagsterInstance.ephemeral(),
            resources=resources,
            run_config={
                "ops": {"probe_features": {"config": {"model": "models:/sslflow-swav@best"}}}
            },
        )


def test_probe_without_features_names_the_file_and_the_asset(
    sslflow_home: Path, resources: dict
) -> None:
    """The core says which file is missing and what writes it; the asset says what to run."""
    with pytest.raises(
        dg.Failure,
        match=r"no feature index at .*index\.json \(written by FeatureIndex\.save\): "
        "materialise probe_features first",
    ):
        dg.materialize(
            [probing.knn_probe],
            instance=dg.DagsterInstance.ephemeral(),
            resources=resources,
            run_config={"ops": {"knn_probe": RUN_CONFIG["knn_probe"]}},
        )
