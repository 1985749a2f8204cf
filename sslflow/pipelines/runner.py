"""Materialise assets from Python or the shell on the persistent Dagster instance.

The ``sslflow`` command and ``make demo`` go through here, so their runs appear in the Dagster
UI (``make ui``) next to runs launched there, each with its MLflow run.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from sslflow.paths import sslflow_home

DAGSTER_YAML = """\
# Written by sslflow: the local Dagster instance of this sslflow home.
# For Postgres storage and remote launchers see docs/deployment.md.
telemetry:
  enabled: false
"""


def dagster_home(home: Path) -> Path:
    """``$DAGSTER_HOME`` if set, else ``<sslflow home>/dagster`` (created with a dagster.yaml)."""
    chosen = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    config = chosen / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(chosen)
    return chosen


def materialize_assets(
    selection: Sequence[str],
    run_config: Mapping[str, Mapping[str, Any]] | None = None,
    home: str | os.PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` (asset names) with per-asset config, in-process.

    Args:
        selection: asset names, in any order (Dagster orders them by their dependencies).
        run_config: ``{asset_name: {config_field: value}}``.
        home: the sslflow home (default ``$SSLFLOW_HOME`` or ``./.sslflow``).
        tags: Dagster run tags.
    """
    from sslflow.pipelines.definitions import defs

    root = sslflow_home(home)
    os.environ["SSLFLOW_HOME"] = str(root)
    dagster_home(root)
    known = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    unknown = [name for name in selection if name not in known]
    if unknown:
        raise ValueError(f"unknown asset(s) {', '.join(unknown)}; assets: {', '.join(sorted(known))}")
    config = {
        "ops": {name: {"config": dict(values)} for name, values in (run_config or {}).items()},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    checks = [c for c in defs.asset_checks or []]
    return dg.materialize(
        [*assets, *checks],
        # An AssetSelection, not strings: dagster parses selection strings with an antlr4 4.13
        # grammar, while lightly's hydra-core pins antlr4 4.9 (the parser then fails to load).
        selection=dg.AssetSelection.assets(*selection),
        instance=dg.DagsterInstance.get(),
        resources=defs.resources,
        run_config=config,
        tags=dict(tags or {}),
    )
