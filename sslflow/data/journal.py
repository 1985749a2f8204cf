"""The output folder of a shard set: the files sslflow owns there, and the progress journal.

The journal (``.sslflow-progress.jsonl``) starts with the writer's fingerprint and gets one
fsynced line per completed shard, so an interrupted write resumes after its last whole shard.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from sslflow.data.manifest import atomic_write_text

log = logging.getLogger(__name__)

JOURNAL_NAME = ".sslflow-progress.jsonl"
OWN_FILE = re.compile(
    r"^(shard-\d{6}\.tar(\.partial)?|manifest\.json(\.partial)?|\.sslflow-progress\.jsonl)$"
)


def foreign_files(out: Path) -> list[str]:
    """Names in ``out`` that sslflow did not write (shard sets never mix with foreign data)."""
    return sorted(p.name for p in out.iterdir() if not OWN_FILE.match(p.name))


def resume_state(out: Path, fingerprint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Completed shards from the journal when it matches this config and the files check out."""
    journal = out / JOURNAL_NAME
    if not journal.exists():
        return [], []
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("fingerprint") != fingerprint:
        log.info("progress journal in %s is for another config; starting over", out)
        return [], []
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in lines[1:]:
        shard = out / entry["name"]
        if not shard.exists() or shard.stat().st_size != entry["bytes"]:
            log.warning("shard %s missing or changed; resuming before it", shard)
            break
        done.append(entry)
        skipped.extend(entry.get("skipped", []))
    if len(done) < len(lines) - 1:
        rewrite_journal(out, lines[0], done)
    if done:
        log.info("resuming %s after %d complete shards", out, len(done))
    return done, skipped


def rewrite_journal(out: Path, header: dict[str, Any], done: list[dict[str, Any]]) -> None:
    """Keep only ``done`` after ``header`` (atomically), when shards after them went missing."""
    text = "".join(json.dumps(e) + "\n" for e in [header, *done])
    atomic_write_text(out / JOURNAL_NAME, text)


def append_journal(out: Path, entry: dict[str, Any]) -> None:
    """Append one entry and fsync: a completed shard is recorded before the next one starts."""
    with open(out / JOURNAL_NAME, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def remove_stale_shards(out: Path, keep: set[str]) -> None:
    """Delete shard files the journal does not vouch for (written after its last entry)."""
    for path in out.iterdir():
        if path.name.startswith("shard-") and path.name not in keep:
            path.unlink()


def clear_own_files(out: Path) -> None:
    """Delete every file sslflow wrote in ``out`` (and nothing else)."""
    for path in out.iterdir():
        if OWN_FILE.match(path.name):
            path.unlink()
