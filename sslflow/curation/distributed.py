"""Hierarchical k-means across torch.distributed ranks: ``python -m sslflow.curation.distributed``.

Every rank runs :func:`main`; level 0 (the pass over every embedding) is split over the ranks
with all-reduces (NCCL on device tensors when every rank has a GPU of its own, gloo
otherwise; see :func:`sslflow.curation.hierarchical.build_hierarchy`), and rank 0
writes the folder. :func:`torchrun_builder` writes the launch files and hands the arguments to
a launcher (the pipelines' torchrun resource), so a launch plugs into
:func:`sslflow.curation.build.cluster_pool` as its ``build``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sslflow.curation.build import HierarchyBuilder
from sslflow.curation.comm import process_group_backend
from sslflow.curation.embedding_set import load_embeddings
from sslflow.curation.hierarchical import HierarchyConfig, build_hierarchy
from sslflow.curation.hierarchy_store import Hierarchy, load_hierarchy
from sslflow.curation.levels import levels_value
from sslflow.curation.storage import load_json, load_npy, save_json, save_npy

log = logging.getLogger(__name__)

MODULE = "sslflow.curation.distributed"


def launch_arguments(
    embeddings_dir: Path,
    out: Path,
    config: HierarchyConfig,
    rows: np.ndarray | None,
    launch_dir: Path,
) -> list[str]:
    """Write the config (and the rows to cluster) into ``launch_dir``; the ranks' arguments.

    ``levels="auto"`` stays ``"auto"``: every rank resolves it alike in ``build_hierarchy``,
    against the rows clustered.
    """
    launch_dir.mkdir(parents=True, exist_ok=True)
    body = {**asdict(config), "levels": levels_value(config.levels)}
    save_json(launch_dir / "config.json", body)
    arguments = ["--embeddings", str(embeddings_dir), "--out", str(out)]
    arguments += ["--config", str(launch_dir / "config.json")]
    if rows is not None:
        save_npy(launch_dir / "rows.npy", rows)
        arguments += ["--rows", str(launch_dir / "rows.npy")]
    return arguments


def torchrun_builder(
    launch: Callable[[list[str]], None],
    embeddings_dir: Path,
    out: Path,
    config: HierarchyConfig,
    launch_dir: Path,
) -> HierarchyBuilder:
    """A ``build`` for ``cluster_pool`` that runs :func:`main` on ranks started by ``launch``."""

    def build(rows: np.ndarray | None) -> Hierarchy:
        launch(launch_arguments(embeddings_dir, out, config, rows, launch_dir))
        return load_hierarchy(out)

    return build


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sslflow hierarchical k-means across torch.distributed ranks"
    )
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", required=True, help="HierarchyConfig JSON")
    parser.add_argument("--rows", help="sorted embedding rows to cluster (after deduplication)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of every rank (``torchrun -m sslflow.curation.distributed``)."""
    import torch
    import torch.distributed as dist

    args = parse_args(argv)
    config = HierarchyConfig(**load_json(Path(args.config)))
    source = load_embeddings(args.embeddings)
    rows = load_npy(Path(args.rows)) if args.rows else None
    local_ranks = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
    backend = process_group_backend(int(local_ranks))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        hierarchy = build_hierarchy(
            source.array(), source.keys(), args.out, config, rows=rows, overwrite=True
        )
        if dist.get_rank() == 0:
            log.info("built %d levels on %d ranks", len(hierarchy.stats), dist.get_world_size())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
