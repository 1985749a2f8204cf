"""The pipeline configuration of an sslflow home: ``<home>/pipeline.yaml``.

One file per home says how its assets are configured, ``{asset: {field: value}}``, with only
the fields that differ from the defaults. The ``sslflow`` command starts every run from it,
adds what ``--config``/``--set`` and the stage flags say, and writes the result back once the
run succeeded; schedules, sensors and the jobs' Launchpad defaults in the Dagster UI launch
with it. So a scheduled re-curation curates the user's own folder with the user's settings,
not the code's defaults, and ``sslflow curate`` after ``sslflow ingest --path ~/photos``
needs no repetition. Edit the file to change the pipeline for every later run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sslflow.data.manifest import atomic_write_text

PIPELINE_FILE = "pipeline.yaml"
AssetConfig = dict[str, dict[str, Any]]


def pipeline_path(home: Path) -> Path:
    return home / PIPELINE_FILE


def load_pipeline_config(home: Path) -> AssetConfig:
    """The home's ``{asset: {field: value}}`` (empty when there is no pipeline.yaml yet).

    Raises:
        ValueError: a file that is not a mapping of asset names to field mappings.
    """
    path = pipeline_path(home)
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise ValueError(f"{path}: expected a mapping of asset name to a mapping of config fields")
    return {str(asset): dict(fields) for asset, fields in loaded.items()}


def merged(
    base: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Mapping[str, Any]]
) -> AssetConfig:
    """``base`` with each asset's fields updated by ``overrides`` (field by field)."""
    result = {asset: dict(fields) for asset, fields in base.items()}
    for asset, fields in overrides.items():
        result.setdefault(asset, {}).update(fields)
    return result


def remember(home: Path, overrides: Mapping[str, Mapping[str, Any]]) -> AssetConfig:
    """Merge ``overrides`` into the home's pipeline.yaml (atomically) and return the result."""
    result = merged(load_pipeline_config(home), overrides)
    home.mkdir(parents=True, exist_ok=True)
    header = (
        "# sslflow pipeline configuration: {asset: {field: value}}; see docs/configuration.md\n"
    )
    atomic_write_text(pipeline_path(home), header + yaml.safe_dump(result, sort_keys=True))
    return result


def run_config_for(
    home: Path, assets: Iterable[str], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Dagster run config for ``assets`` from the home's pipeline.yaml plus ``overrides``.

    Assets outside ``assets`` are left out: a job's run config may only name its own ops.
    """
    wanted = set(assets)
    config = merged(load_pipeline_config(home), overrides or {})
    return run_config_for_assets({a: f for a, f in config.items() if a in wanted})


def run_config_for_assets(config: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{asset: {field: value}}`` as Dagster run config (``ops: {asset: {config: ...}}``)."""
    return {"ops": {asset: {"config": dict(fields)} for asset, fields in sorted(config.items())}}
