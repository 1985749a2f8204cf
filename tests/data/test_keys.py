"""Keys from foreign shards: contained before they are written, duplicates and empty shards
skipped and counted with the shard named, an empty source refused."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import pytest

from foreign_shards import foreign_shard, png
from sslflow.data import ShardDataset, ShardWriteError, open_source, write_shards
from sslflow.data.keys import MAX_KEY_BYTES, contained_key
from sslflow.data.tar import iter_samples, open_url

UNSAFE_KEYS = ["/etc/cron", "a/../../b", "up/..", "bell\x07key", "back\\slash", "k" * 120, ""]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_renamed_flat_short_and_stable(key: str) -> None:
    renamed = contained_key(key)
    assert renamed != key and renamed == contained_key(key)
    assert len(renamed.encode()) <= MAX_KEY_BYTES
    assert "/" not in renamed and "." not in renamed and renamed.isprintable()


@pytest.mark.parametrize("key", ["000123", "photos/cat_01-ab12cd34", "inbox-b1-x"])
def test_safe_keys_are_kept(key: str) -> None:
    assert contained_key(key) == key


def test_writer_renames_unsafe_foreign_keys_and_counts_them(tmp_path: Path) -> None:
    keys = ["/etc/cron", "a/../../b", "bell\x07key", "k" * 120, "fine_key"]
    shard = foreign_shard(
        tmp_path / "foreign.tar", [(f"{key}.png", png(i)) for i, key in enumerate(keys)]
    )
    manifest = write_shards(open_source("shards", shard), tmp_path / "out", progress=False)
    body = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert body["totals"]["renamed_keys"] == 4 == manifest.renamed_keys
    assert body["shards"][0]["renamed_keys"] == 4
    with tarfile.open(manifest.urls()[0]) as tar:
        names = tar.getnames()
    assert all(not n.startswith("/") and ".." not in n and n.isprintable() for n in names)
    metas = {
        sample["__key__"]: json.loads(sample["json"])
        for sample in iter_samples(open_url(manifest.urls()[0]), manifest.urls()[0])
    }
    originals = {meta.get("original_key", key) for key, meta in metas.items()}
    assert originals == set(keys) and "fine_key" in metas


def duplicated_shard(path: Path) -> str:
    """8 members, 5 samples: key a twice (apart), key c twice in a row, key b once."""
    return foreign_shard(
        path,
        [
            ("a.png", png(1)),
            ("a.cls", b"1"),
            ("b.png", png(2)),
            ("a.png", png(3)),
            ("a.cls", b"3"),
            ("c.png", png(4)),
            ("c.png", png(5)),
            ("__meta__.json", b"{}"),
        ],
    )


def test_reader_skips_duplicate_keys_with_a_warning_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shard = duplicated_shard(tmp_path / "dup.tar")
    dataset = ShardDataset([shard])
    with caplog.at_level(logging.WARNING):
        samples = list(dataset)
    assert [(s["key"], s["label"], int(s["image"][0, 0, 0])) for s in samples] == [
        ("a", 1, 1),
        ("b", -1, 2),
        ("c", -1, 4),
    ]
    assert dataset.errors.duplicate_keys == 2
    warned = [r.getMessage() for r in caplog.records if "duplicate key" in r.getMessage()]
    assert len(warned) == 2 and all(shard in w for w in warned)
    assert "'a'" in warned[0] and "'c'" in warned[1]


def test_ingest_lists_duplicate_keys_as_skipped_naming_shard_and_key(tmp_path: Path) -> None:
    shard = duplicated_shard(tmp_path / "dup.tar")
    manifest = write_shards(open_source("shards", shard), tmp_path / "out", progress=False)
    assert manifest.total_samples == 3
    assert [s["where"] for s in manifest.skipped] == [f"{shard}:a", f"{shard}:c"]
    assert all("duplicate key" in s["reason"] for s in manifest.skipped)


def test_duplicate_keys_across_shards_are_skipped_at_ingest(tmp_path: Path) -> None:
    first = foreign_shard(tmp_path / "1.tar", [("x.png", png(1)), ("y.png", png(2))])
    second = foreign_shard(tmp_path / "2.tar", [("y.png", png(3)), ("z.png", png(4))])
    source = open_source("shards", f"{first},{second}")
    manifest = write_shards(source, tmp_path / "out", progress=False)
    read = {s["key"]: int(s["image"][0, 0, 0]) for s in ShardDataset(manifest)}
    assert read == {"x": 1, "y": 2, "z": 4}
    assert [s["where"] for s in manifest.skipped] == [f"{second}:y"]


def test_empty_shard_warns_and_an_empty_source_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = foreign_shard(tmp_path / "empty.tar", [])
    full = foreign_shard(tmp_path / "full.tar", [("x.png", png(1))])
    dataset = ShardDataset([empty, full])
    with caplog.at_level(logging.WARNING):
        assert [s["key"] for s in dataset] == ["x"]
    assert dataset.errors.empty_shards == 1
    assert any(f"shard {empty} holds no samples" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(ShardWriteError, match="no sample"):
        write_shards(open_source("shards", empty), tmp_path / "out", progress=False)
    assert any(f"shard {empty} holds no samples" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "out" / "manifest.json").exists()
