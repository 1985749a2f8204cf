"""The sslflow command and the Dagster code location, as a user runs them from the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sslflow.cli.errors import CliError
from sslflow.cli.main import main
from sslflow.cli.parser import build_parser, load_run_config, parse_overrides
from sslflow.cli.runner import UnknownAssetError
from sslflow.data import Manifest, ShardDataset

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command_and_debug() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sslflow.cli", "--help"], capture_output=True, text=True, check=True
    )
    listed = {
        line.split()[0]
        for line in out.stdout.splitlines()
        if line.startswith("    ") and line.split()
    }
    commands = {
        "demo",
        "ingest",
        "eval-split",
        "curate",
        "pretrain",
        "rounds",
        "probe",
        "materialize",
        "assets",
        "ui",
    }
    assert commands <= listed, out.stdout
    options = {
        line.split()[0].rstrip(",") for line in out.stdout.splitlines() if line.startswith("  -")
    }
    assert "--debug" in options, out.stdout


def test_help_imports_no_heavy_library() -> None:
    """``sslflow --help`` is instant: the parser is built without torch, dagster or mlflow."""
    probe = (
        "import sys\n"
        "from sslflow.cli.parser import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted({'torch', 'dagster', 'mlflow', 'timm'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_overrides_are_parsed_as_yaml() -> None:
    assert parse_overrides(
        ["raw_shards.shard_size=2000", "raw_shards.download=true", "eval_split.path=/x"]
    ) == {
        "raw_shards": {"shard_size": 2000, "download": True},
        "eval_split": {"path": "/x"},
    }
    with pytest.raises(CliError, match="ASSET.FIELD=VALUE"):
        parse_overrides(["shard_size=3"])
    with pytest.raises(CliError, match="not valid YAML"):
        parse_overrides(["raw_shards.shard_size=["])


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
    assert (
        main(["ingest", "--home", str(sslflow_home), "--source", "digits", "--split", "test"]) == 0
    )
    assert "raw_shards: {'samples': 360" in capsys.readouterr().out
    assert (sslflow_home / "dagster" / "dagster.yaml").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{sslflow_home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sslflow").experiment_id])
    assert [r.data.tags["sslflow.stage"] for r in runs] == ["raw_shards"]

    import dagster as dg

    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_shards"))
    assert event is not None and event.asset_materialization.metadata["samples"].value == 360

    # The home remembers the settings: a later run without flags (or a schedule) uses them.
    from sslflow.pipelines.pipeline_config import load_pipeline_config

    assert load_pipeline_config(sslflow_home) == {
        "raw_shards": {"source": "digits", "split": "test"}
    }
    assert main(["ingest", "--home", str(sslflow_home)]) == 0
    again = instance.get_latest_materialization_event(dg.AssetKey("raw_shards"))
    assert again is not None and "reused_from_run" in again.asset_materialization.metadata
    assert len(client.search_runs([client.get_experiment_by_name("sslflow").experiment_id])) == 1


@pytest.fixture()
def cli_home(sslflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An sslflow home whose Dagster instance is its own (restored after the test)."""
    monkeypatch.setenv("DAGSTER_HOME", str(sslflow_home / "dagster"))
    return sslflow_home


def test_failed_step_prints_its_message_and_run_not_a_traceback(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert (
        main(
            ["ingest", "--source", "image-folder", "--path", str(missing), "--home", str(cli_home)]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        f"sslflow ingest: error: raw_shards: source 'image-folder': path {missing} does not exist"
        in err
    )
    assert "pass --path with a folder of images" in err and "rerun with --debug" in err
    assert "Traceback" not in err and "Stack Trace" not in err and len(err.splitlines()) <= 4, err

    # The stack trace stays in the Dagster run the message names.
    run = dg.DagsterInstance.get().get_runs(limit=1)[0]
    assert f"Dagster run {run.run_id}" in err
    failures = dg.DagsterInstance.get().all_logs(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    )
    assert failures and failures[0].dagster_event.step_failure_data.error.stack


def test_debug_raises_the_steps_exception_with_dagsters_traces(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(dg.Failure, match="does not exist; pass --path"):
        main(
            [
                "--debug",
                "ingest",
                "--source",
                "image-folder",
                "--path",
                str(tmp_path / "missing"),
                "--home",
                str(cli_home),
            ]
        )
    assert "Stack Trace" in capsys.readouterr().err


def test_unknown_asset_lists_the_assets(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["materialize", "nope", "--home", str(cli_home)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "sslflow materialize: error: unknown asset(s) nope; assets: curated_index,"
    )
    assert "raw_shards" in err and "Traceback" not in err
    with pytest.raises(UnknownAssetError):  # --debug after the command works too
        main(["materialize", "nope", "--home", str(cli_home), "--debug"])


def test_bad_config_names_the_field_briefly(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--set", "raw_shards.shard_size=abc", "--home", str(cli_home)]) == 1
    err = capsys.readouterr().err
    assert (
        'sslflow ingest: error: Invalid scalar at raw_shards.shard_size. Value "abc"' in err
        and '"Int"' in err
    )
    assert "Traceback" not in err and len(err.splitlines()) == 2, err

    assert main(["ingest", "--set", "raw_shards.shard_sise=1", "--home", str(cli_home)]) == 1
    err = capsys.readouterr().err
    assert (
        'unexpected config entry "shard_sise" at raw_shards. (`sslflow assets`' in err
        and "Expected" not in err
    )

    assert main(["ingest", "--set", "shard_size=3"]) == 1
    assert "error: --set 'shard_size=3': expected ASSET.FIELD=VALUE" in capsys.readouterr().err


CURATE_SMALL = [
    "--set",
    "embeddings.dim=16",
    "--set",
    "embeddings.pca_samples=300",
    "--set",
    "kmeans_hierarchy.levels=[[20, 1, 4], [4, 1, 2]]",
    "--set",
    "curated_index.target_size=150",
]


def test_failed_balance_check_fails_curate_and_blocks_the_shards(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sslflow curate` prints every asset check; curated_top_entropy is blocking: when it
    fails the command exits 1 naming the check, its numbers and the fix, and curated_shards
    does not run. Within reach of the threshold it passes and the shards are written."""
    home = ["--home", str(cli_home)]
    assert main(["ingest", "--source", "digits", "--split", "test", *home]) == 0
    capsys.readouterr()
    impossible = ["--set", "curated_index.min_top_entropy=1.01"]
    assert main(["curate", *CURATE_SMALL, *impossible, *home]) == 1
    captured = capsys.readouterr()
    assert "embeddings check embeddings_finite: passed {'invalid_rows': 0" in captured.out
    assert (
        "curated_index check curated_top_entropy: FAILED {'entropy_top_curated': " in captured.out
        and "'threshold': 1.01" in captured.out
    )
    assert "Class balance " in captured.out and "against a random subset" in captured.out
    err = captured.err
    assert "sslflow curate: error: curated_index check curated_top_entropy failed: " in err
    assert "entropy_top_curated 0." in err and "< min_top_entropy 1.01 (pool 0." in err
    assert "lower curated_index.min_top_entropy" in err and "kmeans_hierarchy.levels" in err
    assert "(blocking: not run: curated_shards)" in err and "Traceback" not in err
    assert "Blocking check" not in err and "blocking asset check" not in err  # Dagster's own
    assert not (cli_home / "curated_shards" / "manifest.json").exists()
    event = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey("curated_shards"))
    assert event is None

    assert main(["curate", *CURATE_SMALL, "--set", "curated_index.min_top_entropy=0.5", *home]) == 0
    out = capsys.readouterr().out
    assert "curated_index: {'selected': 150" in out
    assert "curated_index check curated_top_entropy: passed {'entropy_top_curated': " in out
    assert "'threshold': 0.5" in out and "curated_shards: {'samples': 150" in out
    report = (cli_home / "curated_index" / "report" / "index.html").read_text()
    assert "against a random subset of the same size: normalised class entropy" in report
    summary = json.loads((cli_home / "curated_index" / "summary.json").read_text())
    # The class balance, recomputed from the files curation wrote: the labels of the curated
    # shards, of the pool the hierarchy clustered (its embedding rows, after dedup), and of a
    # uniform random subset of that pool of the same size drawn with curated_index's seed (0).
    labels = np.load(cli_home / "embeddings" / "labels.npy")
    classes = int(labels.max()) + 1
    pool = np.load(cli_home / "kmeans_hierarchy" / "rows.npy")
    curated = Manifest.load(cli_home / "curated_shards")
    curated_labels = [int(s["label"]) for s in ShardDataset(curated, decode="encoded")]
    assert len(curated_labels) == 150
    random_rows = np.random.default_rng(0).choice(pool, size=150, replace=False)

    def entropy(y: Sequence[int] | np.ndarray) -> float:
        """Normalised Shannon entropy of the class counts of ``y`` (1 = every class equal)."""
        counts = np.bincount(y, minlength=classes)
        shares = counts[counts > 0] / counts.sum()
        return float(-(shares * np.log(shares)).sum() / np.log(classes))

    expected = {
        "class_entropy_pool": entropy(labels[pool]),
        "class_entropy_curated": entropy(curated_labels),
        "class_entropy_random": entropy(labels[random_rows]),
    }
    assert {k: summary[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    gain = expected["class_entropy_curated"] - expected["class_entropy_random"]
    verdict = "unchanged" if abs(gain) < 0.005 else "improved" if gain > 0 else "worsened"
    assert summary["class_balance_vs_random"] == verdict
    curated_vs_random = (
        f"{summary['class_entropy_curated']:.3f} vs {summary['class_entropy_random']:.3f}"
    )
    assert curated_vs_random in report


def test_dagster_definitions_validate_loads_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_pretrain_flags_are_every_core_field() -> None:
    """`sslflow pretrain` has one flag per PretrainConfig field, parsed as YAML like --set."""
    import dataclasses

    from sslflow.cli.parser import PRETRAIN_FLAGS
    from sslflow.ssl.config import PretrainConfig

    assert set(PRETRAIN_FLAGS) == {f.name for f in dataclasses.fields(PretrainConfig)} - {
        "progress_bar",
        "strategy",
    }
    args = build_parser().parse_args(
        [
            "pretrain",
            "--lr",
            "0.3",
            "--mean",
            "[0.1, 0.2, 0.3]",
            "--small-stem",
            "true",
            "--min-lr-ratio",
            "0.05",
        ]
    )
    assert load_run_config(args, "pretrained_model", PRETRAIN_FLAGS) == {
        "pretrained_model": {
            "lr": 0.3,
            "mean": [0.1, 0.2, 0.3],
            "small_stem": True,
            "min_lr_ratio": 0.05,
        }
    }
