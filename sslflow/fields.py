"""Descriptions of config fields, written once in the config dataclasses' docstrings.

The ``Attributes:`` section of a core config dataclass is the one place a field is described:
the Dagster Config classes (``sslflow.pipelines.config``) and the ``sslflow`` command's flags
read it from there. Kept free of heavy imports so ``sslflow --help`` stays instant.
"""

from __future__ import annotations

import re

_ATTRIBUTE = re.compile(r"^(\s*)(\w+):\s*(.*)$")


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from a Google-style ``Attributes:`` section of ``cls.__doc__``."""
    lines = (cls.__doc__ or "").splitlines()
    found: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return found
    indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        match = _ATTRIBUTE.match(line)
        depth = len(line) - len(line.lstrip())
        if indent is None and match:
            indent = depth
        if indent is None or depth < indent:
            break
        if depth == indent and match:
            current = match.group(2)
            found[current] = match.group(3).strip()
        elif current is not None:
            found[current] += " " + line.strip()
    return found
