"""A changed input recomputes exactly what depends on it; an unchanged rerun recomputes nothing.

One config field of each asset is changed in turn, from the bottom of the graph to the top
(so each step recomputes as little as possible), on scikit-learn's digits: after each change
the asset and everything downstream of it has a new MLflow run and a new data version, and
every other asset reports its previous materialisation. Data versions are content hashes
where an asset has one, so a change that leaves an output's content as it was stops there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sslflow.pipelines.definitions import ASSETS, CHECKS, defs
from sslflow.pipelines.lineage import DATA_VERSION_TAG
from sslflow.pipelines.metadata import RUN_ID_KEY

UNPARTITIONED = [a for a in ASSETS if a.partitions_def is None]

BASE: dict[str, dict[str, Any]] = {
    "raw_shards": {"source": "digits", "split": "all", "shard_size": 600},
    "eval_split": {"source": "digits", "shard_size": 400},
    "embeddings": {"dim": 16, "pca_samples": 1000},
    "kmeans_hierarchy": {"levels": [[40, 1, 4], [8, 1, 3]], "dedup": False},
    "curated_index": {"target_size": 800, "min_top_entropy": 0.5},
    "curated_shards": {"shard_size": 400},
    "pretrained_model": {
        "backbone": "test_resnet",
        "epochs": 1,
        "samples_per_epoch": 128,
        "batch_size": 64,
        "num_workers": 0,
        "checkpoint_every_n_steps": 2,
    },
    "probe_features": {"backbone": "test_resnet", "batch_size": 500},
    "knn_probe": {"ks": [10, 20]},
    "linear_probe": {"probes": ["sgd"], "sgd_epochs": 1, "lrs": [0.1]},
}

# One field of each asset and another valid value for it, downstream assets first.
CHANGES = [
    ("probing_report", "earlier_runs", 3),
    ("linear_probe", "sgd_epochs", 2),
    ("knn_probe", "temperature", 0.1),
    ("probe_features", "seed", 1),
    ("pretrained_model", "lr", 0.05),
    ("curated_shards", "shard_size", 300),
    ("curated_index", "target_size", 700),
    ("kmeans_hierarchy", "seed", 1),
    ("embeddings", "dim", 12),
    ("eval_split", "shard_size", 300),
    ("raw_shards", "max_side", 6),  # the 8×8 digits stored at 6 px: every image changes
]

# kmeans_hierarchy removes copies of eval_split's test images, so an eval_split change reruns
# the curation; the selection is the same, so the curated shards keep their content (their data
# version holds) and pretrained_model, keyed on it, is reused.
HELD = {"eval_split": ({"curated_shards"}, {"pretrained_model"})}


def downstream(asset: str) -> set[str]:
    """``asset`` and every asset that depends on it, directly or not."""
    graph = defs.resolve_asset_graph()
    found, todo = {asset}, [dg.AssetKey(asset)]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child.to_user_string() not in found and graph.get(child).partitions_def is None:
                found.add(child.to_user_string())
                todo.append(child)
    return found


def materialise(
    instance: dg.DagsterInstance, resources: dict[str, object], config: dict[str, Any]
) -> dict[str, dict]:
    result = dg.materialize(
        [*UNPARTITIONED, *CHECKS],
        instance=instance,
        resources=resources,
        run_config={"ops": {name: {"config": values} for name, values in config.items()}},
    )
    assert result.success
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        found[event.asset_key.to_user_string()] = {
            "reused": "reused_from_run" in materialization.metadata,
            "run": materialization.metadata[RUN_ID_KEY].value,
            "version": (materialization.tags or {}).get(DATA_VERSION_TAG),
        }
    return found


@pytest.mark.timeout(900)
def test_each_changed_input_recomputes_it_and_its_downstream_only(
    resources: dict[str, object], sslflow_home: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    config = {name: dict(values) for name, values in BASE.items()}
    previous = materialise(instance, resources, config)
    assert not any(state["reused"] for state in previous.values())
    assert set(previous) == {a.key.to_user_string() for a in UNPARTITIONED}
    for asset, field, value in CHANGES:
        config.setdefault(asset, {})[field] = value
        current = materialise(instance, resources, config)
        held, reused = HELD.get(asset, (set(), set()))
        expected = downstream(asset) - reused
        recomputed = {name for name, state in current.items() if not state["reused"]}
        assert recomputed == expected, (asset, field)
        for name in expected - held:
            assert current[name]["run"] != previous[name]["run"], (asset, name)  # a new MLflow run
            assert current[name]["version"] != previous[name]["version"], (
                asset,
                name,
            )  # a new data version
        for name in held:
            assert current[name]["version"] == previous[name]["version"], (asset, name)
        for name in set(current) - expected:
            assert current[name] == {**previous[name], "reused": True}, (asset, name)
        previous = current
    again = materialise(instance, resources, config)
    assert all(state["reused"] for state in again.values())
    assert {name: state["version"] for name, state in again.items()} == {
        n: s["version"] for n, s in previous.items()
    }

    # Other shard boundaries, same images: the embeddings are recomputed and come out the
    # same, so their data version holds and nothing below them reruns.
    config["raw_shards"]["shard_size"] = 500
    layout = materialise(instance, resources, config)
    assert not layout["raw_shards"]["reused"] and not layout["embeddings"]["reused"]
    assert layout["embeddings"]["version"] == again["embeddings"]["version"]
    assert layout["kmeans_hierarchy"]["reused"]
