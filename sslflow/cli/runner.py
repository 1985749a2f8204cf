"""Materialise assets from Python or the shell on the persistent Dagster instance.

The ``sslflow`` command and ``make demo`` go through here, so their runs appear in the Dagster
UI (``make ui``) next to runs launched there, each with its MLflow run.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from sslflow.paths import sslflow_home
from sslflow.pipelines.pipeline_config import remember, run_config_for

DAGSTER_YAML = """\
# Written by sslflow: the local Dagster instance of this sslflow home.
# For Postgres storage and remote launchers see docs/deployment.md.
telemetry:
  enabled: false
"""


# dg.materialize's job name: runs started here look in the UI as they did through dg.materialize.
RUN_JOB = "__ephemeral_asset_job__"


class UnknownAssetError(ValueError):
    """An asset name that the sslflow definitions do not have (the message lists the valid ones)."""


def _drop_stack_trace(record: logging.LogRecord) -> bool:
    """Keep a failure event's headline, drop the stack trace Dagster appends after a blank line."""
    event = getattr(record, "dagster_meta", {}).get("dagster_event")
    if event is not None and getattr(event.event_specific_data, "error", None) is not None:
        record.msg = str(record.msg).partition("\n\n")[0]
    return True


def _brief_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(_drop_stack_trace)
    return logger


# The console logger for callers that report errors themselves (the sslflow command): the run's
# event log, and so the Dagster UI, still holds every stack trace.
brief_console_logger = dg.LoggerDefinition(
    _brief_console,
    config_schema=dg.colored_console_logger.config_schema,
    description="Dagster's colored console logger without the stack traces of failures.",
)


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
    raise_on_error: bool = True,
    brief_errors: bool = False,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` (asset names) with per-asset config, in-process.

    The run starts from the home's pipeline configuration (``<home>/pipeline.yaml``, see
    :mod:`sslflow.pipelines.pipeline_config`) with ``run_config`` on top; when it succeeds,
    ``run_config`` is written back there, so schedules and sensors run with the same settings.

    Args:
        selection: asset names, in any order (Dagster orders them by their dependencies).
        run_config: ``{asset_name: {config_field: value}}``; assets outside ``selection`` are
            only remembered.
        home: the sslflow home (default ``$SSLFLOW_HOME`` or ``./.sslflow``).
        tags: Dagster run tags.
        raise_on_error: re-raise a failed step's exception; False returns the failed result.
        brief_errors: log failures to the console without their stack traces, for callers that
            print their own summary of ``result`` (the run's event log keeps the traces).

    Raises:
        UnknownAssetError: a name in ``selection`` is not an asset.
        dagster.DagsterInvalidConfigError: ``run_config`` does not fit the assets' config schemas.
    """
    from sslflow.pipelines.definitions import defs

    root = sslflow_home(home)
    os.environ["SSLFLOW_HOME"] = str(root)
    dagster_home(root)
    known = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    unknown = [name for name in selection if name not in known]
    if unknown:
        raise UnknownAssetError(
            f"unknown asset(s) {', '.join(unknown)}; assets: {', '.join(sorted(known))}"
        )
    config = {
        **run_config_for(root, selection, run_config),
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    checks = [c for c in defs.asset_checks or []]
    run_defs = dg.Definitions(
        # An AssetSelection, not strings: dagster parses selection strings with an antlr4 4.13
        # grammar, while lightly's hydra-core pins antlr4 4.9 (the parser then fails to load).
        jobs=[dg.define_asset_job(RUN_JOB, selection=dg.AssetSelection.assets(*selection))],
        assets=[*assets, *checks],
        resources=defs.resources,
        loggers={"console": brief_console_logger if brief_errors else dg.colored_console_logger},
    )
    result = run_defs.resolve_job_def(RUN_JOB).execute_in_process(
        run_config=config,
        instance=dg.DagsterInstance.get(),
        raise_on_error=raise_on_error,
        tags=dict(tags or {}),
    )
    if result.success and run_config:
        remember(root, run_config)
    return result
