"""Dagster Config classes derived from the core's config dataclasses: one declaration each.

A stage's fields, defaults and descriptions are written once, on the core dataclass (its
docstring's ``Attributes:`` section is the description of each field). :func:`derive_config`
builds the ``dg.Config`` the asset takes from it, so the Python API, the CLI (``--set`` and the
stage flags) and the Dagster UI share the same defaults, and every core field is reachable.
Fields that only the asset has (which data to train on, the registry alias ...) are declared
on the asset's subclass; fields that only make sense in Python (progress bars, callbacks)
are left out by name. A stage built from two core configs inherits from both derived classes,
renaming fields whose names alone would not say which config they set (``dedup_max_shift``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field, create_model

from sslflow.fields import attribute_docs

Core = TypeVar("Core")


def _config_type(annotation: Any) -> Any:
    """Dagster's config schema has lists, not tuples: ``tuple[X, ...]`` becomes ``list[X]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple:
        return list[_config_type(args[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        inner = _config_type(kept[0])
        return inner | None if len(kept) < len(args) else inner
    return annotation


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
        return list(value) if isinstance(value, tuple) else value
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"config field {field.name} needs a default to be set from Dagster")


def derive_config(
    core: type,
    name: str,
    doc: str,
    exclude: Collection[str] = (),
    rename: Mapping[str, str] | None = None,
) -> type[dg.Config]:
    """A ``dg.Config`` subclass with the fields of the dataclass ``core``.

    Args:
        core: the stage's config dataclass (fields with defaults, documented in ``Attributes:``).
        name: the class name Dagster shows.
        doc: the class docstring (shown in the UI).
        exclude: fields not settable from Dagster (process-local, such as a progress bar).
        rename: core field → Dagster field name, where the core name alone would not say which
            config it sets (``{"enabled": "dedup"}``).
    """
    hints = typing.get_type_hints(core)
    docs = attribute_docs(core)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(core):
        if field.name in exclude:
            continue
        default = _default(field)
        description = docs.get(field.name, "")
        fields[(rename or {}).get(field.name, field.name)] = (
            _config_type(hints[field.name]),
            Field(default, description=description),
        )
    return create_model(name, __base__=dg.Config, __doc__=doc, **fields)


def core_values(
    config: dg.Config, core: type, rename: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The values of ``config`` that are fields of the dataclass ``core`` (lists back to tuples;
    ``rename`` as given to :func:`derive_config`)."""
    hints = typing.get_type_hints(core)
    values = config.model_dump()
    found: dict[str, Any] = {}
    for field in dataclasses.fields(core):
        name = (rename or {}).get(field.name, field.name)
        if name not in values:
            continue
        value = values[name]
        if isinstance(value, list) and _is_tuple(hints[field.name]):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        found[field.name] = value
    return found


def _is_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(annotation))
