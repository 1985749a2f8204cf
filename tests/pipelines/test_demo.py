"""The offline fallback of `make demo`: scikit-learn's digits through every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslflow.cli.demo import choose_demo_source
from sslflow.cli.main import main
from sslflow.data import Manifest


def test_digits_demo_runs_every_stage(
    sslflow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["demo", "--source", "digits", "--home", str(sslflow_home)]) == 0
    out = capsys.readouterr().out
    for asset in (
        "raw_shards",
        "eval_split",
        "embeddings",
        "kmeans_hierarchy",
        "curated_index",
        "curated_shards",
        "pretrained_model",
        "probe_features",
        "knn_probe",
        "linear_probe",
        "probing_report",
    ):
        assert f"  {asset} " in out, asset
    assert "report:" in out and (sslflow_home / "probing_report" / "index.html").is_file()
    raw = Manifest.load(sslflow_home / "raw_shards")
    assert raw.total_samples == 1797 and raw.geometry is not None
    assert (raw.geometry.mode, raw.geometry.image_size()) == ("L", 8)
    trained = json.loads(
        next((sslflow_home / "pretrained_model").glob("*/config.json")).read_text()
    )
    assert (trained["image_size"], trained["in_chans"]) == (
        8,
        1,
    )  # sizes and channels follow the data


def test_demo_source_choice() -> None:
    assert choose_demo_source("digits").source == "digits"
    with pytest.raises(ValueError, match="valid: auto, fashion-mnist, digits"):
        choose_demo_source("cifar10")
