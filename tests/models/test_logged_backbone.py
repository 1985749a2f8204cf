"""A backbone logged to MLflow loads back from its checkpoint, by alias, version or model id."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslflow import tracking
from sslflow.models import load_backbone, log_backbone, random_backbone
from sslflow.tracking import registry


def test_logged_backbone_loads_back_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pytorch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = tracking.TrackingStore(uri, artifact_root=str(tmp_path / "artifacts"))
    backbone = random_backbone("resnet10t", seed=5)
    with store.start_run("pretrained_model", {}) as run:
        logged = log_backbone(backbone, run.run_id, uri, registry.registry_name("simclr"))
    assert (logged.registry_uri, logged.version_uri) == (
        "models:/sslflow-simclr@current",
        "models:/sslflow-simclr/1",
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model URI must not be unpickled")

    monkeypatch.setattr(mlflow.pytorch, "load_model", refuse)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    for spec in (logged.registry_uri, logged.version_uri, logged.model_uri):
        loaded = load_backbone(spec, tracking_uri=uri)
        assert torch.equal(loaded.embed(images), backbone.embed(images)), spec
    assert registry.training_run_id(logged.version_uri, uri) == run.run_id
    version = tracking.client(uri).get_model_version("sslflow-simclr", "1")
    assert "unpickles" in version.description and "weights_only=True" in version.description
    assert tracking.client(uri).get_registered_model("sslflow-simclr").description == (
        version.description
    )
    assert registry.latest_registered_model(uri) == "models:/sslflow-simclr/1"


def test_unknown_model_uri_lists_the_registry(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ValueError, match="no registered models"):
        load_backbone("models:/sslflow-simclr@current", tracking_uri=uri)
