"""Shard writer and reader: round trip, exactly-once, resampling, atomicity, corruption, HTTP."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sslflow.data import Manifest, ShardDataset, ShardReadError, ShardWriteError, write_shards
from sslflow.data.datasets import ArraySource, digits
from sslflow.data.journal import JOURNAL_NAME
from sslflow.data.samples import Sample, Skipped


def collect_keys(dataset: ShardDataset, workers: int = 0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [sample["key"] for sample in loader]


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """All 1,797 digits in 8 shards of 250 (the last one shorter), one member per image (the
    block layout has its own tests in test_blocks.py)."""
    return write_shards(
        digits("all"),
        tmp_path_factory.mktemp("digits"),
        shard_size=250,
        progress=False,
        layout="samples",
    )


def test_round_trip_keeps_pixels_labels_and_keys(digit_shards: Manifest) -> None:
    source = digits("all")
    samples = list(ShardDataset(digit_shards))
    assert [s["key"] for s in samples] == [f"digits-all-{i:06d}" for i in range(len(source))]
    pixels = torch.stack([s["image"] for s in samples]).numpy()[:, 0]
    np.testing.assert_array_equal(pixels, source.images)
    np.testing.assert_array_equal([s["label"] for s in samples], source.labels)
    assert digit_shards.total_samples == 1797 and len(digit_shards.shards) == 8
    assert digit_shards.classes == [str(d) for d in range(10)]


def test_manifest_records_counts_bytes_and_hashes(digit_shards: Manifest) -> None:
    body = json.loads((digit_shards.root / "manifest.json").read_text())
    assert body["totals"] == {
        "samples": 1797,
        "bytes": digit_shards.total_bytes,
        "shards": 8,
        "skipped": 0,
        "renamed_keys": 0,
    }
    first = body["shards"][0]
    assert first["samples"] == 250 and len(first["sha256"]) == 64
    assert first["bytes"] == (digit_shards.root / first["name"]).stat().st_size
    assert body["writer"]["shard_size"] == 250 and body["source"]["name"] == "digits"


def test_pil_decoding_and_per_sample_metadata(digit_shards: Manifest) -> None:
    sample = next(iter(ShardDataset(digit_shards, decode="pil", image_mode="RGB")))
    assert isinstance(sample["image"], Image.Image) and sample["image"].mode == "RGB"
    assert sample["image"].size == (8, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_finite_mode_yields_every_sample_once_across_workers(
    digit_shards: Manifest, workers: int
) -> None:
    keys = collect_keys(ShardDataset(digit_shards), workers)
    assert len(keys) == 1797 and len(set(keys)) == 1797


@pytest.mark.parametrize("workers", [0, 2])
def test_finite_mode_is_exactly_once_across_two_ranks(digit_shards: Manifest, workers: int) -> None:
    per_rank = [
        collect_keys(ShardDataset(digit_shards, rank=r, world_size=2), workers) for r in (0, 1)
    ]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) + len(per_rank[1]) == 1797
    assert set(per_rank[0]) | set(per_rank[1]) == {f"digits-all-{i:06d}" for i in range(1797)}


def test_exactly_once_with_fewer_shards_than_slots(tmp_path: Path) -> None:
    manifest = write_shards(digits("test"), tmp_path, shard_size=1000, progress=False)
    assert len(manifest.shards) == 1
    per_rank = [collect_keys(ShardDataset(manifest, rank=r, world_size=2), 2) for r in (0, 1)]
    assert len(per_rank[0]) + len(per_rank[1]) == manifest.total_samples
    assert len(set(per_rank[0]) | set(per_rank[1])) == manifest.total_samples


@pytest.mark.parametrize("workers", [0, 2])
def test_resampled_mode_has_fixed_epoch_length(digit_shards: Manifest, workers: int) -> None:
    dataset = ShardDataset(
        digit_shards, mode="resampled", samples_per_epoch=1001, shuffle_buffer=100
    )
    assert len(dataset) == 1001
    assert len(collect_keys(dataset, workers)) == 1001


def test_resampled_mode_is_seeded_and_changes_with_epoch(digit_shards: Manifest) -> None:
    def draw(seed: int, epoch: int) -> list[str]:
        dataset = ShardDataset(digit_shards, mode="resampled", samples_per_epoch=300, seed=seed)
        dataset.set_epoch(epoch)
        return collect_keys(dataset)

    assert draw(1, 0) == draw(1, 0)
    assert draw(1, 0) != draw(1, 1)
    assert draw(1, 0) != draw(2, 0)


def test_resampled_across_ranks_splits_the_epoch(digit_shards: Manifest) -> None:
    sizes = [
        len(
            collect_keys(
                ShardDataset(
                    digit_shards, mode="resampled", samples_per_epoch=101, rank=r, world_size=2
                )
            )
        )
        for r in (0, 1)
    ]
    assert sizes == [51, 50]


# --------------------------------------------------------------------------- atomicity


class Interrupted(RuntimeError):
    pass


class FailingSource(ArraySource):
    """Raises after ``fail_after`` items, like a process killed mid-write."""

    fail_after: int = 10**9

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        for position, item in enumerate(super().iter_items(start), start):
            if position >= self.fail_after:
                raise Interrupted(f"interrupted at {position}")
            yield item


def failing_digits(fail_after: int) -> FailingSource:
    base = digits("all")
    source = FailingSource(
        base.name, base.images, base.labels, base.key_prefix, base.origin, base.classes
    )
    source.fail_after = fail_after
    return source


def test_interrupted_write_leaves_no_partial_final_files_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    with pytest.raises(Interrupted):
        write_shards(failing_digits(620), out, shard_size=250, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert "manifest.json" not in names
    assert [n for n in names if n.endswith(".tar")] == ["shard-000000.tar", "shard-000001.tar"]
    assert (out / JOURNAL_NAME).exists()

    resumed = write_shards(failing_digits(10**9), out, shard_size=250, progress=False)
    clean = write_shards(digits("all"), tmp_path / "clean", shard_size=250, progress=False)
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in clean.shards]
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_rerun_with_same_config_does_nothing(digit_shards: Manifest) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in digit_shards.root.iterdir()}
    again = write_shards(
        digits("all"), digit_shards.root, shard_size=250, progress=False, layout="samples"
    )
    assert again.fingerprint == digit_shards.fingerprint
    assert {p.name: p.stat().st_mtime_ns for p in digit_shards.root.iterdir()} == before


def test_other_config_over_complete_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    write_shards(digits("test"), tmp_path, shard_size=200, progress=False)
    with pytest.raises(ShardWriteError, match="another source or config"):
        write_shards(digits("test"), tmp_path, shard_size=100, progress=False)
    manifest = write_shards(
        digits("test"), tmp_path, shard_size=100, overwrite=True, progress=False
    )
    assert len(manifest.shards) == 4
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [
        f"shard-{i:06d}.tar" for i in range(4)
    ]


def test_stale_shards_of_another_config_are_never_mixed_in(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        write_shards(failing_digits(600), tmp_path, shard_size=100, progress=False)
    manifest = write_shards(digits("all"), tmp_path, shard_size=250, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [s.name for s in manifest.shards]
    assert manifest.total_samples == 1797


def test_exact_multiple_leaves_no_empty_final_shard(tmp_path: Path) -> None:
    base = digits("all")
    source = ArraySource(
        base.name, base.images[:500], base.labels[:500], base.key_prefix, base.origin, base.classes
    )
    manifest = write_shards(source, tmp_path, shard_size=250, progress=False)
    assert [s.samples for s in manifest.shards] == [250, 250]
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ShardWriteError, match="notes.txt"):
        write_shards(digits("test"), tmp_path, progress=False)


def test_max_bytes_starts_new_shards(tmp_path: Path) -> None:
    manifest = write_shards(
        digits("test"),
        tmp_path,
        shard_size=10_000,
        max_bytes=100_000,
        progress=False,
        layout="samples",
    )
    assert len(manifest.shards) > 1
    assert all(
        s.bytes <= 100_000 + 10_240 for s in manifest.shards
    )  # + tar's end-of-archive record


# --------------------------------------------------------------------------- corruption


def truncated_copy(manifest: Manifest, out: Path) -> Path:
    """Copy the shards, cutting the second one in the middle of a member."""
    out.mkdir()
    for index, shard in enumerate(manifest.shards):
        data = (manifest.root / shard.name).read_bytes()
        (out / shard.name).write_bytes(data[: len(data) // 2 + 100] if index == 1 else data)
    return out


def test_truncated_shard_raises_with_its_url(digit_shards: Manifest, tmp_path: Path) -> None:
    folder = truncated_copy(digit_shards, tmp_path / "cut")
    urls = sorted(str(p) for p in folder.glob("*.tar"))
    with pytest.raises(ShardReadError, match="shard-000001.tar"):
        list(ShardDataset(urls))


def test_truncated_shard_is_skipped_and_counted(digit_shards: Manifest, tmp_path: Path) -> None:
    folder = truncated_copy(digit_shards, tmp_path / "cut")
    dataset = ShardDataset(sorted(str(p) for p in folder.glob("*.tar")), on_error="skip")
    keys = collect_keys(dataset)
    assert 1797 - 250 < len(keys) < 1797 and len(set(keys)) == len(keys)
    assert dataset.errors.corrupt_shards == 1


def corrupt_image_shards(tmp_path: Path) -> Manifest:
    """Eight digits, the fourth with bytes that are not an image.

    The writer decodes every image and skips bad ones, so the bad sample is put into the
    written shard afterwards, as a shard from another tool or a bit flip on disk would hold it.
    """
    import webdataset as wds

    from sslflow.data.tar import iter_samples

    base = digits("all")
    source = ArraySource(
        base.name, base.images[:8], base.labels[:8], base.key_prefix, base.origin, base.classes
    )
    manifest = write_shards(source, tmp_path, shard_size=4, progress=False, layout="samples")
    shard = tmp_path / "shard-000000.tar"
    with open(shard, "rb") as handle:
        samples = list(iter_samples(handle, str(shard)))
    with wds.TarWriter(str(shard)) as writer:
        for sample in samples:
            record = {k: v for k, v in sample.items() if k != "__url__"}
            if record["__key__"].endswith("000003"):
                record["png"] = b"not a png"
            writer.write(record)
    return manifest


@pytest.mark.parametrize("mode", ["finite", "resampled"])
def test_undecodable_sample_raises_with_key_and_shard(tmp_path: Path, mode: str) -> None:
    manifest = corrupt_image_shards(tmp_path)
    with pytest.raises(ShardReadError, match=r"digits-all-000003.*shard-000000.tar"):
        list(ShardDataset(manifest, mode=mode, samples_per_epoch=40, shuffle_buffer=2))


@pytest.mark.parametrize("mode", ["finite", "resampled"])
def test_undecodable_sample_is_skipped_and_counted(tmp_path: Path, mode: str) -> None:
    manifest = corrupt_image_shards(tmp_path)
    dataset = ShardDataset(
        manifest, mode=mode, samples_per_epoch=40, shuffle_buffer=2, on_error="skip"
    )
    keys = collect_keys(dataset)
    assert "digits-all-000003" not in keys
    assert dataset.errors.bad_samples >= 1
    assert len(keys) == (7 if mode == "finite" else 40)


# --------------------------------------------------------------------------- HTTP


@pytest.fixture()
def http_root(digit_shards: Manifest) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(digit_shards.root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def test_reads_shards_over_http_from_manifest_url(http_root: str, digit_shards: Manifest) -> None:
    dataset = ShardDataset(f"{http_root}/manifest.json")
    keys = collect_keys(dataset, workers=2)
    assert sorted(keys) == sorted(s["key"] for s in ShardDataset(digit_shards))


def test_reads_shards_over_http_with_brace_urls(http_root: str) -> None:
    dataset = ShardDataset(
        f"{http_root}/shard-{{000000..000001}}.tar", mode="resampled", samples_per_epoch=300
    )
    samples = list(dataset)
    assert len(samples) == 300 and all(s["image"].shape == (1, 8, 8) for s in samples)


def test_png_bytes_are_lossless(digit_shards: Manifest) -> None:
    sample = next(iter(ShardDataset(digit_shards, decode="pil")))
    buffer = io.BytesIO()
    sample["image"].save(buffer, format="PNG")
    assert np.array_equal(np.asarray(Image.open(buffer)), digits("all").images[0])


def test_shards_read_with_tarfile_and_webdataset(digit_shards: Manifest) -> None:
    """sslflow's ustar writer produces shards that other readers take as they are."""
    import tarfile

    import webdataset as wds

    first = digit_shards.urls()[0]
    with tarfile.open(first) as archive:
        members = archive.getmembers()
    assert [m.name for m in members[:3]] == [
        "digits-all-000000.cls",
        "digits-all-000000.json",
        "digits-all-000000.png",
    ]
    assert all(m.isfile() and m.mtime == 0 for m in members) and len(members) == 3 * 250
    theirs = list(wds.WebDataset(digit_shards.urls(), shardshuffle=False, empty_check=False))
    ours = list(ShardDataset(digit_shards))
    assert [s["__key__"] for s in theirs] == [s["key"] for s in ours]
    assert [int(s["cls"]) for s in theirs] == [s["label"] for s in ours]
    np.testing.assert_array_equal(
        np.array(Image.open(io.BytesIO(theirs[7]["png"]))), ours[7]["image"][0].numpy()
    )


# --------------------------------------------------------------------------- compressed shards


def _gzipped(digit_shards: Manifest, folder: Path) -> list[Path]:
    """The digit shards gzip-compressed: the first as .tgz (by Python's gzip), the others as
    .tar.gz written by tarfile's own ``w:gz`` mode from the members (as other tools do)."""
    import gzip
    import tarfile

    folder.mkdir()
    paths = []
    for number, url in enumerate(digit_shards.urls()):
        if number == 0:
            target = folder / "shard-000000.tgz"
            target.write_bytes(gzip.compress(Path(url).read_bytes()))
        else:
            target = folder / f"shard-{number:06d}.tar.gz"
            with tarfile.open(url) as source, tarfile.open(target, "w:gz") as out:
                for member in source.getmembers():
                    out.addfile(member, source.extractfile(member))
        paths.append(target)
    return paths


def test_gzip_shards_read_like_plain_ones(digit_shards: Manifest, tmp_path: Path) -> None:
    paths = _gzipped(digit_shards, tmp_path / "gz")
    plain = list(ShardDataset(digit_shards))
    ours = list(ShardDataset([str(p) for p in paths]))
    assert [s["key"] for s in ours] == [s["key"] for s in plain]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(ours, plain, strict=True))
    single = ShardDataset(str(paths[1]))  # one local .tar.gz path is a shard, not a URL list
    assert [s["key"] for s in single] == [s["key"] for s in plain[250:500]]


def test_gzip_shards_over_http(digit_shards: Manifest, tmp_path: Path) -> None:
    paths = _gzipped(digit_shards, tmp_path / "gz")
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "gz"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        keys = collect_keys(ShardDataset([f"{root}/{p.name}" for p in paths]), workers=2)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(keys) == sorted(s["key"] for s in ShardDataset(digit_shards))


def test_corrupt_gzip_shard_names_the_shard(digit_shards: Manifest, tmp_path: Path) -> None:
    import gzip

    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(gzip.compress(Path(digit_shards.urls()[0]).read_bytes())[:3000])
    with pytest.raises(ShardReadError, match="broken.tar.gz"):
        list(ShardDataset([str(broken)]))
    skipping = ShardDataset([str(broken)], on_error="skip")
    assert 0 < len(list(skipping)) < 250 and skipping.errors.corrupt_shards == 1
