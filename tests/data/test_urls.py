"""Which URLs sslflow opens: pipe: commands only when the user asks, never from data; shard
names of a manifest stay inside its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sslflow.data import Manifest, ShardDataset, open_source, write_shards
from sslflow.data.datasets import digits
from sslflow.data.tar import open_url
from sslflow.data.urls import UrlRefused, check_url


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """The 360 test digits in two shards."""
    return write_shards(
        digits("test"), tmp_path_factory.mktemp("digits"), shard_size=200, progress=False
    )


def pipe_line(marker: Path, shard: str) -> str:
    """A pipe: URL that would create ``marker`` and then stream a real shard."""
    return f"pipe:touch {marker}; cat {shard}"


def test_url_list_with_a_pipe_line_is_refused_naming_file_and_line(
    shard_set: Manifest, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    listing = tmp_path / "urls.txt"
    first, second = shard_set.urls()
    listing.write_text(f"# two shards\n{first}\n{pipe_line(marker, second)}\n")
    with pytest.raises(UrlRefused, match=rf"{listing}:3.*--allow-pipe"):
        open_source("shards", str(listing))
    assert not marker.exists()


def test_pipe_url_in_a_reader_list_is_refused_before_any_read(
    shard_set: Manifest, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(UrlRefused, match="pipe:"):
        ShardDataset([pipe_line(marker, shard_set.urls()[0])])
    with pytest.raises(UrlRefused):
        open_url(pipe_line(marker, shard_set.urls()[0]))
    assert not marker.exists()


def test_explicit_pipe_source_runs_when_the_user_allows_it(
    shard_set: Manifest, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(pipe_line(marker, url) + "\n" for url in shard_set.urls()))
    source = open_source("shards", str(listing), allow_pipe=True)
    written = write_shards(source, tmp_path / "out", shard_size=1000, progress=False)
    assert written.total_samples == 360 and marker.exists()
    piped = ShardDataset([pipe_line(marker, shard_set.urls()[0])], allow_pipe=True)
    assert [s["key"] for s in piped] == [s["key"] for s in ShardDataset(shard_set.urls()[0])]


@pytest.mark.parametrize(
    "url",
    ["gs://bucket/shard.tar", "sftp://host/shard.tar", "ais://bucket/shard.tar", "a.tar\nrm -rf"],
)
def test_other_schemes_and_control_characters_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_pipe=True)


@pytest.mark.parametrize("url", ["/data/shard.tar", "shard.tar", "http://h/a.tar", "file:///a.tar"])
def test_local_paths_and_http_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../outside.tar", "sub/../../outside.tar", "pipe:touch x", "http://h/a.tar"],
)
def test_manifest_names_only_files_inside_its_folder(
    shard_set: Manifest, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "set"
    shutil.copytree(shard_set.root, folder)
    body = json.loads((folder / "manifest.json").read_text())
    body["shards"][0]["name"] = name
    (folder / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match=r"manifest\.json: shard name .* inside the manifest"):
        Manifest.load(folder)
    with pytest.raises(ValueError, match="inside the manifest"):
        open_source("shards", str(folder / "manifest.json"))
