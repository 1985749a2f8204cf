"""Real photos through sslflow: ingest speed with resize, peak memory per stage, batch class mix.

Three parts, each against a baseline measured in the same run (absolute times are noise on a
shared 2-core machine, ratios much less so):

- ``ingest``: images/s of ``write_shards(..., max_side=N)`` on a folder of photo crops
  (JPEG/PNG, grey, CMYK, EXIF-rotated; ``tests/photo_folder.py``) against a plain PIL loop over
  the same files (open, ``exif_transpose``, RGB, resize to the same target, JPEG into memory).
  Rounds alternate ours / baseline (and which goes first); the median of the per-round ratios
  is printed (goal ≥ 0.8).
- ``memory``: 266 phone-sized JPEGs (4000×3000) through every CLI stage, each stage in its own
  wrapper process on one fresh SSLFLOW_HOME. The wrapper reports two peaks: the kernel's
  high-water mark of the largest single process of the stage (``RUSAGE_CHILDREN.ru_maxrss``
  read by the wrapper after the stage exits: exact, never misses a spike, but DataLoader
  workers are separate processes and are not added up), and the sum of PSS over the stage's
  process tree sampled every 0.1 s with psutil (adds the workers, each shared page divided
  among the processes that share it; may miss a spike shorter than the interval). The wrapper is a
  Python process rather than ``/usr/bin/time -v`` so it works where GNU time is missing and can
  sample the tree too. Goal: both peaks under 4 GiB.
- ``mix``: distinct classes per training batch of 256 from ``sslflow.ssl.loader.training_dataset``
  (2 DataLoader workers) on a labelled photo folder, written once in its sorted (by class)
  order as sslflow did before and once in ingest's seeded shuffled order, each against i.i.d.
  draws of 256 labels from the same label distribution (goal: ratio ≥ 0.95). The folder uses
  a grid of tiles per photo so there are enough classes for a batch not to hold all of them
  by chance alone; the mean total-variation distance between a batch's class histogram and
  the label distribution is printed as well.

    .venv/bin/python benchmarks/bench_photos.py                  # all three parts
    .venv/bin/python benchmarks/bench_photos.py --only ingest --max-side 256
    .venv/bin/python benchmarks/bench_photos.py --only memory --photos /tmp/phone-photos
    .venv/bin/python benchmarks/bench_photos.py --only mix --mix-grid 4x6
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from photo_folder import build_phone_photos, build_photo_folder, photo_classes

GIB = 1 << 30
MEMORY_GOAL_GIB = 4.0
PARTS = ("ingest", "memory", "mix")

# Runs one stage, samples its process tree's PSS (RSS with each shared page divided among the
# processes sharing it: forked DataLoader workers share the parent's libraries, and summing
# their RSS would count those ~1 GiB once per worker), then writes both peaks as JSON to argv[1].
# RUSAGE_CHILDREN here covers only this stage: the wrapper has no other children.
WRAPPER = r"""
import json, resource, subprocess, sys, time
import psutil
out, cmd = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(cmd)
tree_peak = 0
try:
    parent = psutil.Process(child.pid)
except psutil.Error:
    parent = None
while child.poll() is None and parent is not None:
    try:
        procs = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        procs = []
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    tree_peak = max(tree_peak, total)
    time.sleep(0.1)
child.wait()
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
maxrss *= 1 if sys.platform == "darwin" else 1024
with open(out, "w") as handle:
    json.dump({"rc": child.returncode, "maxrss": maxrss, "tree_peak": tree_peak}, handle)
sys.exit(child.returncode)
"""


# --------------------------------------------------------------------------- ingest


def default_per_class(files: int, grid: tuple[int, int] = (1, 3)) -> int:
    """Files per class so that a photo folder holds about ``files`` files."""
    return max(1, math.ceil(files / len(photo_classes(grid))))


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` with its longer side brought down to ``max_side`` (unchanged when already
    smaller)."""
    width, height = size
    scale = max_side / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def baseline_pass(files: Sequence[Path], max_side: int, quality: int) -> int:
    """What a user would write: PIL open, EXIF transpose, RGB, resize, JPEG into memory."""
    for path in files:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            resized = upright.resize(target_size(upright.size, max_side), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            resized.save(buffer, format="JPEG", quality=quality)
    return len(files)


def ours_pass(
    folder: Path, out: Path, max_side: int, quality: int, limit: int | None = None
) -> int:
    """sslflow's ingest with resize into a fresh folder (a complete one would be a no-op);
    ``limit`` keeps the first files only (a warm-up)."""
    from sslflow.data import open_source, write_shards

    source = open_source("image-folder", path=str(folder))
    if limit is not None:
        source = dataclasses.replace(
            source, files=source.files[:limit], labels=(source.labels or [])[:limit] or None
        )
    manifest = write_shards(
        source, out, shard_size=1000, max_side=max_side, jpeg_quality=quality, progress=False
    )
    return int(manifest.total_samples)


def run_ingest(args: argparse.Namespace, work: Path) -> None:

    quality = args.jpeg_quality
    per_class = args.per_class or default_per_class(args.files)
    folder = build_photo_folder(work / "photos", per_class=per_class, seed=args.seed)
    files = folder.files
    print(
        f"ingest: {len(files)} files in {len(folder.classes)} classes, modes {folder.modes}, "
        f"max_side {args.max_side}, jpeg_quality {quality}"
    )
    # The folder was just written: flush it, or the first shard's fsync waits for its writeback
    # (ext4's ordered journal), and read it all, so neither side pays for a first disk read.
    os.sync()
    for path in files:
        path.read_bytes()
    baseline_pass(
        files[:50], args.max_side, args.jpeg_quality
    )  # both sides' imports and first calls warm
    ours_pass(folder.root, work / "warm-up", args.max_side, quality, limit=50)
    ours_rates, base_rates, ratios = [], [], []
    for index in range(args.rounds):
        out = work / f"shards-{index}"
        # Alternate which goes first, so neither always runs on a cache the other warmed.
        for which in ("ours", "baseline") if index % 2 == 0 else ("baseline", "ours"):
            started = time.perf_counter()
            if which == "ours":
                count = ours_pass(folder.root, out, args.max_side, quality)
                ours = count / (time.perf_counter() - started)
                shutil.rmtree(out)
            else:
                base = baseline_pass(files, args.max_side, args.jpeg_quality) / (
                    time.perf_counter() - started
                )
        ours_rates.append(ours)
        base_rates.append(base)
        ratios.append(ours / base)
        print(
            f"  round {index + 1}: ours {ours:.0f}/s ({count} written), baseline {base:.0f}/s, "
            f"ratio {ours / base:.2f}"
        )
    ratio = statistics.median(ratios)
    print(
        f"ingest: ours {statistics.median(ours_rates):.0f}/s, baseline "
        f"{statistics.median(base_rates):.0f}/s"
    )
    print(
        f"RATIO ingest ours/baseline (median of {args.rounds} rounds): {ratio:.2f} "
        f"(goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class StageResult:
    """One CLI stage run in its own wrapper process."""

    name: str
    seconds: float
    maxrss: int
    tree_peak: int
    rc: int
    tail: list[str]


def phone_photos(args: argparse.Namespace, work: Path) -> Path:
    """The folder of phone photos: ``--photos`` when it already holds JPEGs, else built there."""
    root = Path(args.photos) if args.photos else work / "phone"
    if args.photos and any(root.rglob("*.jpg")):
        print(f"memory: reusing {sum(1 for _ in root.rglob('*.jpg'))} photos in {root}")
        return root
    started = time.perf_counter()
    build_phone_photos(root, count=args.phone_count, seed=args.seed)
    print(f"memory: wrote {args.phone_count} phone photos in {time.perf_counter() - started:.0f} s")
    return root


def split_layout(photos: Path, out: Path) -> Path:
    """``out/train/<class>`` and ``out/test/<class>``: symlinks to the photos, ~75/25 per class."""
    for class_dir in sorted(p for p in photos.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))
        cut = max(1, round(len(files) * 0.75)) if len(files) > 1 else len(files)
        for split, chosen in (("train", files[:cut]), ("test", files[cut:])):
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                (target / path.name).symlink_to(path.resolve())
    return out


def run_stage(
    name: str, command: list[str], env: dict[str, str], work: Path, timeout: float
) -> StageResult:
    """Run one stage under the wrapper; its output is kept for the failure report."""
    result_file = work / f"{name}.rusage.json"
    started = time.perf_counter()
    try:
        process = subprocess.run(
            [sys.executable, "-c", WRAPPER, str(result_file), *command],
            check=False,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        output, rc = process.stdout, process.returncode
    except subprocess.TimeoutExpired as exc:
        output = (
            exc.stdout
            if isinstance(exc.stdout, str)
            else (exc.stdout or b"").decode(errors="replace")
        )
        output += f"\n(timed out after {timeout:.0f} s)"
        rc = -9
    seconds = time.perf_counter() - started
    usage = (
        json.loads(result_file.read_text())
        if result_file.exists()
        else {"maxrss": 0, "tree_peak": 0}
    )
    return StageResult(
        name, seconds, int(usage["maxrss"]), int(usage["tree_peak"]), rc, output.splitlines()[-20:]
    )


def stage_commands(
    sslflow: str, photos: Path, split_root: Path, home: Path, extra: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The five stages, tiny but real on 266 images (field names from sslflow/pipelines/assets)."""
    common = ["--home", str(home)]
    commands = {
        "ingest": [sslflow, "ingest", "--source", "image-folder", "--path", str(photos), *common],
        "eval-split": [
            sslflow,
            "eval-split",
            "--source",
            "image-folder",
            "--path",
            str(split_root),
            *common,
        ],
        "curate": [
            sslflow,
            "curate",
            *common,
            "--set",
            "curated_index.target_size=100",
            "--set",
            "kmeans_hierarchy.levels=[[20,1,5],[4,1,3]]",
        ],
        "pretrain": [
            sslflow,
            "pretrain",
            *common,
            "--set",
            "pretrained_model.max_steps=2",
            "--set",
            "pretrained_model.batch_size=16",
            "--set",
            "pretrained_model.samples_per_epoch=64",
        ],
        "probe": [sslflow, "probe", *common],
    }
    return {name: command + extra.get(name, []) for name, command in commands.items()}


def parse_extra(items: Sequence[str]) -> dict[str, list[str]]:
    """``["ingest:--set raw_shards.max_side=512"]`` → ``{"ingest": ["--set",
    "raw_shards.max_side=512"]}``."""
    extra: dict[str, list[str]] = {}
    for item in items:
        stage, sep, rest = item.partition(":")
        if not sep or stage not in ("ingest", "eval-split", "curate", "pretrain", "probe"):
            raise SystemExit(
                f"--stage-args {item!r}: expected STAGE:ARGS with STAGE one of ingest, "
                "eval-split, curate, pretrain, probe"
            )
        extra.setdefault(stage, []).extend(shlex.split(rest))
    return extra


def run_memory(args: argparse.Namespace, work: Path) -> None:
    photos = phone_photos(args, work)
    split_root = split_layout(photos, work / "split")
    home = work / "home"
    home.mkdir()
    sslflow = str(Path(sys.executable).parent / "sslflow")
    env = {**os.environ, "SSLFLOW_HOME": str(home)}
    results = []
    for name, command in stage_commands(
        sslflow, photos, split_root, home, parse_extra(args.stage_args)
    ).items():
        print(f"memory: {name}: {shlex.join(command)}", flush=True)
        result = run_stage(name, command, env, work, args.stage_timeout)
        results.append(result)
        if result.rc != 0:
            print(f"memory: {name} failed (exit {result.rc}); last 20 lines:")
            print("\n".join(f"    {line}" for line in result.tail))
    print(
        f"\n{'stage':<12}{'seconds':>9}{'peak RSS GiB':>14}{'tree PSS GiB':>14}{'exit':>6}  < "
        f"{MEMORY_GOAL_GIB:.0f} GiB"
    )
    for r in results:
        under = max(r.maxrss, r.tree_peak) < MEMORY_GOAL_GIB * GIB
        print(
            f"{r.name:<12}{r.seconds:>9.1f}{r.maxrss / GIB:>14.2f}{r.tree_peak / GIB:>14.2f}"
            f"{r.rc:>6}  {'yes' if under else 'NO'}"
        )
    worst = max(max(r.maxrss, r.tree_peak) for r in results) / GIB
    print(
        f"RATIO memory worst peak / goal: {worst:.2f} GiB / {MEMORY_GOAL_GIB:.0f} GiB = "
        f"{worst / MEMORY_GOAL_GIB:.2f} "
        "(goal <= 1: "
        f"{'met' if worst < MEMORY_GOAL_GIB and all(r.rc == 0 for r in results) else 'NOT met'})"
    )


# --------------------------------------------------------------------------- mix


def collate_labels(samples: list[dict[str, object]]) -> list[int]:
    """Keep only the labels of a batch (images of mixed sizes or channels need not stack)."""
    return [int(sample["label"]) for sample in samples]  # type: ignore[call-overload]


def batch_stats(batches: np.ndarray, classes: int, distribution: np.ndarray) -> tuple[float, float]:
    """Mean distinct classes per batch and mean total-variation distance to ``distribution``."""
    distinct = [len(np.unique(batch)) for batch in batches]
    tv = [
        0.5 * np.abs(np.bincount(batch, minlength=classes) / len(batch) - distribution).sum()
        for batch in batches
    ]
    return float(np.mean(distinct)), float(np.mean(tv))


def _batch_labels(manifest: object, batches: int, seed: int) -> np.ndarray:
    """Labels of ``batches`` training batches of 256 from 2 DataLoader workers: (batches, 256)."""
    import torch
    from torch.utils.data import DataLoader

    from sslflow.ssl.loader import training_dataset

    dataset = training_dataset(manifest, batches * 256, 32, seed)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset, batch_size=256, num_workers=2, collate_fn=collate_labels, drop_last=True
    )
    torch.set_num_threads(1)
    return np.array([labels for labels, _ in zip(loader, range(batches))])


def run_mix(args: argparse.Namespace, work: Path) -> None:
    """Classes per batch with the folder written in its sorted (by class) order, as sslflow did
    before, and in ingest's seeded shuffled order, each against i.i.d. draws."""
    from sslflow.data import open_source, write_shards

    rows, cols = (int(v) for v in args.mix_grid.lower().split("x"))
    grid = (rows, cols)
    per_class = args.per_class or default_per_class(args.files, grid)
    folder = build_photo_folder(work / "mix-photos", per_class=per_class, seed=args.seed, grid=grid)
    classes = len(folder.classes)
    shuffled = open_source("image-folder", path=str(folder.root))
    order = sorted(range(len(shuffled.files)), key=lambda i: shuffled.files[i])
    sorted_source = dataclasses.replace(
        shuffled,
        files=[shuffled.files[i] for i in order],
        labels=[shuffled.labels[i] for i in order],
    )
    labels = np.array(shuffled.labels)
    distribution = np.bincount(labels, minlength=classes) / len(labels)
    iid = np.random.default_rng(args.seed).choice(
        classes, size=(args.mix_batches, 256), p=distribution
    )
    iid_distinct, iid_tv = batch_stats(iid, classes, distribution)
    print(
        f"mix: {len(folder.files)} files, {classes} classes (grid {rows}x{cols}), shards of "
        f"{args.mix_shard_size}, {args.mix_batches} batches of 256, 2 workers; "
        f"i.i.d. {iid_distinct:.2f} classes/batch, TV {iid_tv:.3f}"
    )
    for name, source in (("folder order", sorted_source), ("shuffled ingest", shuffled)):
        manifest = write_shards(
            source, work / f"mix-{name.split()[0]}", shard_size=args.mix_shard_size, progress=False
        )
        ours_distinct, ours_tv = batch_stats(
            _batch_labels(manifest, args.mix_batches, args.seed), classes, distribution
        )
        ratio = ours_distinct / iid_distinct
        print(f"mix: {name}: {ours_distinct:.2f} classes/batch, TV distance {ours_tv:.3f}")
        print(
            f"RATIO mix classes/batch {name}/iid: {ratio:.3f} (goal >= 0.95: "
            f"{'met' if ratio >= 0.95 else 'NOT met'})"
        )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable; default all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--files", type=int, default=1000, help="ingest/mix: about this many photo crops"
    )
    parser.add_argument(
        "--per-class", type=int, help="ingest/mix: files per class (overrides --files)"
    )
    parser.add_argument(
        "--max-side", type=int, default=128, help="ingest/mix: longer side images are downscaled to"
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=90, help="ingest: JPEG quality of resized images"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="ingest: alternating rounds of ours and baseline"
    )
    parser.add_argument(
        "--photos", help="memory: folder of phone photos to reuse (built there when empty)"
    )
    parser.add_argument(
        "--phone-count", type=int, default=266, help="memory: phone photos to build"
    )
    parser.add_argument(
        "--stage-timeout", type=float, default=3600, help="memory: seconds per stage"
    )
    parser.add_argument(
        "--stage-args",
        action="append",
        default=[],
        metavar="STAGE:ARGS",
        help=(
            "memory: extra CLI arguments for a stage, e.g. 'ingest:--set "
            "raw_shards.max_side=512' (repeatable)"
        ),
    )
    parser.add_argument(
        "--mix-grid", default="4x6", help="mix: ROWSxCOLS tiles per photo, one class per tile"
    )
    parser.add_argument("--mix-shard-size", type=int, default=100, help="mix: samples per shard")
    parser.add_argument(
        "--mix-batches", type=int, default=20, help="mix: training batches of 256 to count"
    )
    args = parser.parse_args()

    parts = args.only or list(PARTS)
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        for part in PARTS:
            if part not in parts:
                continue
            work = Path(tmp) / part
            work.mkdir()
            started = time.perf_counter()
            try:
                {"ingest": run_ingest, "memory": run_memory, "mix": run_mix}[part](args, work)
            except Exception:  # noqa: BLE001 - report the part's failure, run the next part
                traceback.print_exc()
                print(f"{part}: FAILED (traceback above)")
            print(f"{part}: {time.perf_counter() - started:.0f} s\n", flush=True)
    print("command: " + shlex.join([sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
