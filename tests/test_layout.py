"""The layering README.md's "Layout" states, read from the code's imports (every import, nested ones
too), and the size limit of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sslflow"
CORE = ("data", "models", "curation", "ssl", "evaluation", "tracking")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """``sslflow.x.y`` → its file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (sslflow uses no relative imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            names.add(node.module)
    return names


MODULES = _modules()


def _part(module: str) -> str:
    """The top-level part of sslflow a module belongs to (``sslflow.ssl.train`` → ``ssl``)."""
    return module.split(".")[1] if "." in module else ""


def _violations(allowed: dict[str, tuple[str, ...]]) -> list[str]:
    """Imports of other sslflow parts that ``allowed`` (part → parts it may use) forbids."""
    found = []
    for module, path in MODULES.items():
        part = _part(module)
        if part not in allowed:
            continue
        for name in _imports(path):
            used = _part(name) if name.startswith("sslflow.") else None
            if used and used != part and used not in allowed[part]:
                found.append(f"{module} imports {name}")
    return found


def test_core_never_imports_dagster() -> None:
    offenders = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _part(module) in CORE
        for name in _imports(path)
        if name.split(".")[0] in {"dagster", "dagster_pipes", "dagster_k8s"}
    ]
    assert not offenders


def test_each_part_uses_only_the_parts_below_it() -> None:
    """data at the bottom; models and tracking over it; curation, ssl and evaluation over models
    (never one another's training code); the Dagster shell and the CLI over everything."""
    allowed = {
        "data": ("paths", "fields", "devices"),
        "tracking": ("paths",),
        "models": ("data", "tracking", "devices"),
        "curation": ("data", "models", "tracking", "paths", "fields", "devices"),
        "evaluation": ("data", "models", "tracking", "paths", "fields", "devices"),
        "ssl": ("data", "models", "tracking", "paths", "fields", "devices"),
    }
    assert not _violations(allowed)


def test_mlflow_is_imported_only_by_tracking() -> None:
    offenders = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _part(module) != "tracking"
        for name in _imports(path)
        if name.split(".")[0] == "mlflow"
    ]
    assert not offenders


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it along one of its concepts"
