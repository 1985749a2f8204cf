"""Reference pages generated from the Dagster definitions: every asset's config
(docs/configuration.md) and the assets, jobs, schedules and sensors (docs/definitions.md).

Generating them keeps the docs and the code in step: a test fails when they differ.
"""

import json
from collections.abc import Iterable

import dagster as dg

SCALARS = {
    "IntSourceType": "int",
    "StringSourceType": "str",
    "BoolSourceType": "bool",
    "Int": "int",
    "String": "str",
    "Bool": "bool",
    "Float": "float",
    "Any": "any",
}


def _type_name(field: dg.Field) -> str:
    """``Noneable.IntSourceType`` → ``int``, ``Array.String`` → ``list[str]``."""
    config_type = field.config_type
    name = str(getattr(config_type, "given_name", None) or config_type.key).removeprefix(
        "Noneable."
    )
    for dagster_name, python_name in SCALARS.items():
        name = name.replace(dagster_name, python_name)
    if name.startswith("Array."):
        name = f"list[{name.removeprefix('Array.')}]"
    return name.replace("|", "\\|")


def config_reference_markdown(defs: dg.Definitions) -> str:
    """One table per asset: field, type, default, description."""
    lines = [
        "# Configuration reference",
        "",
        "Every asset's config, generated from the code by `sslflow assets --markdown`.",
        "Set fields in the Dagster Launchpad (`ops: {asset: {config: {...}}}`), in a YAML file",
        "given to `sslflow <stage> --config` (`{asset: {field: value}}`), or one at a time with",
        "`--set asset.field=value`.",
    ]
    graph = defs.get_repository_def().asset_graph
    for key in sorted(graph.get_all_asset_keys(), key=str):
        node = graph.get(key).assets_def.node_def
        lines += ["", f"## `{key.to_user_string()}`", ""]
        if node.description:
            lines += [" ".join(node.description.split()), ""]
        schema = node.config_schema.as_field().config_type if node.config_schema else None
        fields = getattr(schema, "fields", {}) if schema is not None else {}
        if not fields:
            lines.append("No configuration.")
            continue
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field in sorted(fields.items()):
            default = (
                json.dumps(field.default_value, ensure_ascii=False)
                if field.default_provided
                else "required"
            )
            description = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field)} | `{default}` | {description} |")
    return "\n".join(lines) + "\n"


def _cell(text: str | None) -> str:
    """One table cell: whitespace folded, pipes escaped."""
    return " ".join((text or "").split()).replace("|", "\\|")


def _names(keys: Iterable[dg.AssetKey]) -> str:
    return ", ".join(f"`{key.to_user_string()}`" for key in sorted(keys, key=str)) or "–"


def definitions_reference_markdown(defs: dg.Definitions) -> str:
    """Tables of the assets (with their checks), jobs, schedules and sensors that ``defs`` holds."""
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    checks: dict[dg.AssetKey, list[str]] = {}
    for check in graph.asset_check_keys:
        spec = graph.get_check_spec(check)
        blocking = " (blocking)" if spec.blocking else ""
        checks.setdefault(spec.asset_key, []).append(
            f"`{spec.name}`{blocking}: {_cell(spec.description)}"
        )
    lines = [
        "# Assets, jobs, schedules and sensors",
        "",
        "Everything the Dagster code location defines, generated from the code by",
        "`sslflow assets --definitions`. Each asset writes its files under `<home>/<asset>/`;",
        "[configuration.md](configuration.md) lists every asset's config fields.",
        "",
        "## Assets",
        "",
        "| asset | group | reads | what it is | checks |",
        "|---|---|---|---|---|",
    ]
    for key in sorted(graph.get_all_asset_keys(), key=str):
        node = graph.get(key)
        partitioned = " (one partition per inbox entry)" if node.partitions_def else ""
        lines.append(
            f"| `{key.to_user_string()}` | {node.group_name} | {_names(node.parent_keys)} | "
            f"{_cell(node.description)}{partitioned} | {'<br>'.join(checks.get(key, [])) or '–'} |"
        )
    lines += ["", "## Jobs", "", "| job | assets | what it does |", "|---|---|---|"]
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue  # Dagster's implicit job of all assets
        assets = job.asset_layer.executable_asset_keys
        lines.append(f"| `{job.name}` | {_names(assets)} | {_cell(job.description)} |")
    lines += ["", "## Schedules", "", "| schedule | job | cron (UTC) | ships | what |"]
    lines.append("|---|---|---|---|---|")
    for schedule in sorted(repository.schedule_defs, key=lambda s: s.name):
        lines.append(
            f"| `{schedule.name}` | `{schedule.job_name}` | `{schedule.cron_schedule}` | "
            f"{schedule.default_status.value.lower()} | {_cell(schedule.description)} |"
        )
    lines += ["", "## Sensors", "", "| sensor | job | ships | what |", "|---|---|---|---|"]
    for sensor in sorted(repository.sensor_defs, key=lambda s: s.name):
        lines.append(
            f"| `{sensor.name}` | `{sensor.job_name}` | {sensor.default_status.value.lower()} | "
            f"{_cell(sensor.description)} |"
        )
    return "\n".join(lines) + "\n"
