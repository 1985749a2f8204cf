"""Where sslflow keeps its files: the sslflow home and the folders inside it."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".sslflow"


def sslflow_home(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the sslflow home: ``root`` if given, else ``$SSLFLOW_HOME``, else ``./.sslflow``.

    Big artifacts (shards, memmaps, checkpoints) live here; MLflow only gets their URIs.
    """
    chosen = root or os.environ.get("SSLFLOW_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """The current git commit of ``cwd`` (or of the sslflow checkout), ``"unknown"`` outside git."""
    import subprocess

    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
