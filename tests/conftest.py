"""Shared fixtures: small real shard sets and an sslflow home with MLflow on SQLite."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from sslflow.data import Manifest, write_shards
from sslflow.data.datasets import ArraySource, fashion_mnist


def head(source: ArraySource, count: int) -> ArraySource:
    """The first ``count`` images of an in-memory source (same keys as the full source)."""
    labels = None if source.labels is None else source.labels[:count]
    return ArraySource(
        name=source.name,
        images=source.images[:count],
        labels=labels,
        key_prefix=source.key_prefix,
        origin={**source.origin, "head": count},
        classes=source.classes,
    )


@dataclass(frozen=True)
class FashionSubset:
    """Real Fashion-MNIST images: ``train`` (2,000 in 4 shards) and ``test`` (500 in 1 shard)."""

    train: Manifest
    test: Manifest


@pytest.fixture(scope="session")
def fmnist_subset(tmp_path_factory: pytest.TempPathFactory) -> FashionSubset:
    root = tmp_path_factory.mktemp("fmnist")
    train = write_shards(
        head(fashion_mnist(split="train"), 2000), root / "train", shard_size=500, progress=False
    )
    test = write_shards(
        head(fashion_mnist(split="test"), 500), root / "test", shard_size=500, progress=False
    )
    return FashionSubset(train=train, test=test)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def sslflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh sslflow home; SSLFLOW_HOME points at it so default resources use it too."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SSLFLOW_HOME", str(home))
    return home


@pytest.fixture()
def resources(sslflow_home: Path) -> dict[str, object]:
    """Dagster resources over the temporary home: MLflow on ``<home>/mlflow.db``, torchrun ranks
    as subprocesses."""
    from sslflow.pipelines.resources import MLflowTracking, SslflowHome
    from sslflow.pipelines.torchrun import SubprocessTorchrun

    return {
        "home": SslflowHome(root=str(sslflow_home)),
        "mlflow": MLflowTracking(home=str(sslflow_home)),
        "torchrun": SubprocessTorchrun(),
    }
