"""The configuration reference (docs/configuration.md), generated from the assets' Config classes.

Generating it keeps the docs and the code in step: a test fails when they differ.
"""

import json

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
    for asset in sorted(defs.assets or [], key=lambda a: a.key.to_user_string()):  # type: ignore[union-attr]
        node = asset.node_def  # type: ignore[union-attr]
        lines += ["", f"## `{asset.key.to_user_string()}`", ""]  # type: ignore[union-attr]
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
