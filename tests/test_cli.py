"""The sslflow command and the Dagster code location, as a user runs them from the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sslflow.cli import build_parser, load_run_config, main, parse_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_every_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "sslflow.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "ingest", "eval-split", "materialize", "ui"):
        assert command in out.stdout


def test_overrides_are_parsed_as_yaml() -> None:
    assert parse_overrides(["raw_shards.shard_size=2000", "raw_shards.download=true", "eval_split.path=/x"]) == {
        "raw_shards": {"shard_size": 2000, "download": True},
        "eval_split": {"path": "/x"},
    }
    with pytest.raises(SystemExit, match="ASSET.FIELD=VALUE"):
        parse_overrides(["shard_size=3"])


def test_flags_override_config_file_and_set(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("raw_shards:\n  source: digits\n  shard_size: 100\n")
    args = build_parser().parse_args(
        ["ingest", "--config", str(config), "--set", "raw_shards.shard_size=200", "--split", "all"]
    )
    merged = load_run_config(args, "raw_shards", ("source", "split", "shard_size"))
    assert merged == {"raw_shards": {"source": "digits", "shard_size": 200, "split": "all"}}


def test_ingest_materialises_raw_shards_on_the_persistent_instance(
    sslflow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["ingest", "--home", str(sslflow_home), "--source", "digits", "--split", "test"]) == 0
    assert "raw_shards: {'samples': 360" in capsys.readouterr().out
    assert (sslflow_home / "dagster" / "dagster.yaml").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sslflow").experiment_id])
    assert [r.data.tags["sslflow.stage"] for r in runs] == ["raw_shards"]

    import dagster as dg

    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_shards"))
    assert event is not None and event.asset_materialization.metadata["samples"].value == 360


def test_unknown_asset_is_named(sslflow_home: Path) -> None:
    with pytest.raises(ValueError, match="unknown asset.*nope.*raw_shards"):
        main(["materialize", "nope", "--home", str(sslflow_home)])


def test_dagster_definitions_validate_loads_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
