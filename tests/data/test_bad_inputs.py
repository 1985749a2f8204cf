"""Foreign shard sets and manifests that are broken: every failure names the file, shard or key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from foreign_shards import foreign_shard, png
from sslflow.data import Manifest, SourceError, open_source, write_shards
from sslflow.data.datasets import digits


def test_unreadable_label_or_metadata_skips_the_sample_naming_shard_and_key(
    tmp_path: Path,
) -> None:
    shard = foreign_shard(
        tmp_path / "f.tar",
        [
            ("a.png", png(1)),
            ("a.cls", b"cat"),
            ("b.png", png(2)),
            ("b.json", b"{not json"),
            ("c.png", png(3)),
            ("c.json", b"[1, 2]"),
            ("d.png", png(4)),
            ("d.cls", b"3"),
        ],
    )
    manifest = write_shards(open_source("shards", shard), tmp_path / "out", progress=False)
    assert manifest.total_samples == 1
    assert [s["where"] for s in manifest.skipped] == [f"{shard}:a", f"{shard}:b", f"{shard}:c"]


def test_a_corrupt_foreign_shard_fails_ingest_naming_it(tmp_path: Path) -> None:
    members = [(f"{key}.png", png(i)) for i, key in enumerate("abc")]
    data = Path(foreign_shard(tmp_path / "good.tar", members)).read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[: 2 * 1024 + 700])  # the third member is cut: a was read whole
    with pytest.raises(SourceError, match=rf"corrupt or unreadable shard {broken} .*'a'"):
        write_shards(open_source("shards", str(broken)), tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{truncated", "not valid JSON"),
        ("[]", "not an sslflow manifest"),
        ('{"format_version": 1, "shards": []}', "malformed manifest.*fingerprint"),
        ('{"format_version": 1, "shards": [{"name": "x.tar"}], "fingerprint": ""}', "malformed"),
    ],
)
def test_a_malformed_manifest_names_its_file(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "set"
    write_shards(digits("test"), folder, shard_size=400, progress=False)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        Manifest.load(folder)
    assert str(folder / "manifest.json") in str(raised.value)


def test_a_manifest_copied_elsewhere_still_reads_its_own_shards(tmp_path: Path) -> None:
    write_shards(digits("test"), tmp_path / "a", shard_size=200, progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    manifest = Manifest.load(tmp_path / "b")
    assert all(Path(url).parent == tmp_path / "b" for url in manifest.urls())
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["totals"]["samples"] == 360
