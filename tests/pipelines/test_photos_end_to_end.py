"""A folder of real photos through every stage from the CLI, with no geometry settings at all.

The folder is built from the photos shipped with scikit-learn (crops of varying size and
aspect, JPEG and PNG, grey, CMYK and EXIF-rotated files). Only sizes of work (steps, clusters)
are set: image size, channels, colour mode and normalisation come from the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from photo_folder import build_photo_folder
from sslflow.cli.main import main
from sslflow.data import Manifest
from sslflow.models import load_backbone


@pytest.fixture()
def photo_pool(tmp_path: Path) -> tuple[Path, Path]:
    """(pool folder, train/test folder): 6 classes of photo crops each."""
    pool = build_photo_folder(
        tmp_path / "pool", per_class=40, seed=1, grey=3, cmyk=1, exif_rotated=2
    )
    split = build_photo_folder(tmp_path / "eval", per_class=24, seed=2, split=True, grey=2, cmyk=1)
    return pool.root, split.root


def test_photo_folder_through_every_stage(
    photo_pool: tuple[Path, Path], sslflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    pool, split = photo_pool
    home = ["--home", str(sslflow_home)]
    assert main(["ingest", "--source", "image-folder", "--path", str(pool), *home]) == 0
    assert main(["eval-split", "--source", "image-folder", "--path", str(split), *home]) == 0
    curate = [
        "--set",
        "kmeans_hierarchy.levels=[[24,1,4],[6,1,3]]",
        "--set",
        "curated_index.target_size=120",
    ]
    assert main(["curate", *curate, *home]) == 0
    steps = [
        "--set",
        "pretrained_model.max_steps=3",
        "--set",
        "pretrained_model.batch_size=32",
        "--set",
        "pretrained_model.num_workers=0",
    ]
    assert main(["pretrain", *steps, *home]) == 0
    assert main(["probe", "--set", "linear_probe.sgd_epochs=2", *home]) == 0

    raw = Manifest.load(sslflow_home / "raw_shards")
    assert raw.geometry is not None and raw.geometry.mode == "RGB"
    curated = Manifest.load(sslflow_home / "curated_shards")  # what pretraining reads
    assert curated.geometry is not None and curated.total_samples == 120
    inferred = curated.geometry.image_size()
    assert 48 <= inferred < 224  # the crops' own size, not 28 px and not ImageNet's 224

    embedded = json.loads((sslflow_home / "embeddings" / "meta.json").read_text())["identity"]
    assert (embedded["image_mode"], embedded["in_chans"]) == ("RGB", 3)

    runs = list((sslflow_home / "pretrained_model").glob("*/config.json"))
    trained = json.loads(runs[0].read_text())
    assert (trained["in_chans"], trained["image_size"]) == (
        3,
        inferred,
    )  # colour, at the photos' size
    assert (
        len(trained["mean"]) == 3 and len(set(trained["mean"])) == 3
    )  # measured per colour channel
    backbone = load_backbone(runs[0].parent / "backbone.pt")
    assert (backbone.in_chans, backbone.image_size) == (3, inferred)
    assert backbone.embed(torch.zeros(2, 3, 300, 200, dtype=torch.uint8)).shape == (
        2,
        backbone.feature_dim,
    )

    report = (sslflow_home / "probing_report" / "index.html").read_text()
    assert "raw pixels" in report and "random init" in report
    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sslflow").experiment_id
    knn = client.search_runs([experiment], "tags.`sslflow.stage` = 'knn_probe'")[0].data.metrics
    accuracies = [v for k, v in knn.items() if k.endswith("top1")]
    assert accuracies and all(0.0 <= v <= 1.0 for v in accuracies)
    assert max(accuracies) > 1 / 6  # six classes: every extractor beats chance on real photos
