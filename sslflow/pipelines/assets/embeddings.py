"""The embeddings asset: the raw pool as an N×D float16 memmap, and the curation round it starts.

A thin wrapper over ``sslflow.curation.embeddings``: ``embedder: latest-model`` names the latest
pretrained model, so round t's model curates round t+1.
"""

import time

import dagster as dg

from sslflow.curation.embedding_set import load_embeddings
from sslflow.curation.embeddings import EmbedConfig, embed_shards
from sslflow.curation.hierarchical import find_invalid_rows
from sslflow.data.manifest import sha256_file
from sslflow.pipelines.assets.data import raw_manifest
from sslflow.pipelines.config import core_values, derive_config
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.instance import latest_metadata, upstream_run_ids
from sslflow.pipelines.lineage import INPUT_FINGERPRINT, input_fingerprint, reuse_if_unchanged
from sslflow.pipelines.metadata import run_metadata
from sslflow.pipelines.resources import MLflowTracking, SslflowHome
from sslflow.pipelines.rounds import LATEST_MODEL, ROUND_KEY, latest_round
from sslflow.tracking.registry import pin_model_uri

GROUP = "curation"


class EmbeddingsConfig(
    derive_config(  # type: ignore[misc]  # mypy cannot follow a class built at import
        EmbedConfig,
        "EmbedFields",
        "The fields of sslflow.curation.embeddings.EmbedConfig, with its defaults.",
        exclude=("tracking_uri", "progress"),
    )
):
    """How the pool is embedded (see ``sslflow.curation.embeddings``). ``embedder`` also takes
    ``latest-model``: the model of the latest pretrained_model run, so round t's model curates
    round t+1."""

    def embed_config(self, tracking_uri: str, embedder: str) -> EmbedConfig:
        values = {**core_values(self, EmbedConfig), "embedder": embedder}
        return EmbedConfig(**values, tracking_uri=tracking_uri, progress=True)


def resolve_embedder(
    context: dg.AssetExecutionContext, embedder: str, tracking_uri: str
) -> tuple[str, int]:
    """The embedder to use, a model pinned to its version, and the curation round it starts.

    ``latest-model`` becomes the version-pinned ``model_uri`` of the latest pretrained_model
    materialisation and starts the round after the latest curated_index's; an alias
    (``models:/<name>@<alias>``) becomes the version it names now; any other embedder is round 0.
    """
    if embedder != LATEST_MODEL:
        try:
            return pin_model_uri(embedder, tracking_uri), 0
        except ValueError as exc:
            raise bad_input(str(exc)) from exc
    uri = latest_metadata(context, "pretrained_model", "model_uri")
    if not uri:
        raise bad_input(
            "embedder latest-model needs a pretrained model: materialise pretrained_model first"
        )
    return str(uri), latest_round(context.instance) + 1


@dg.asset(group_name=GROUP, deps=["raw_shards"], code_version="1", kinds={"numpy", "mlflow"})
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    home: SslflowHome,
    mlflow: MLflowTracking,
) -> dg.MaterializeResult:
    """N×D float16 embedding memmap of the raw pool, with keys and labels (resumable by chunk)."""
    manifest = raw_manifest(home)
    out = home.asset_dir("embeddings")
    embedder, curation_round = resolve_embedder(context, config.embedder, mlflow.resolved_uri())
    # The pinned model is an input too: `latest-model` names a new model after each pretraining.
    inputs = input_fingerprint(context, config, ["raw_shards"], extra={"embedder": embedder})
    reused = reuse_if_unchanged(context, inputs, [out])
    if reused is not None:
        return reused
    with mlflow.start_run(
        context, "embeddings", upstream=upstream_run_ids(context, ["raw_shards"])
    ) as run:
        run.log_params({**config.model_dump(), "resolved_embedder": embedder})
        run.log_shard_input("raw_shards", manifest, "curation")
        run.set_tags({"sslflow.curation_round": curation_round})
        started = time.perf_counter()
        result = embed_shards(manifest, out, config.embed_config(mlflow.resolved_uri(), embedder))
        seconds = time.perf_counter() - started
        array = result.array()
        digest = sha256_file(result.path)
        run.log_metrics(
            {
                "rows": len(array),
                "dim": array.shape[1],
                "seconds": seconds,
                "images_per_second": len(array) / max(seconds, 1e-9),
            }
        )
        run.set_tags(
            {
                "sslflow.embeddings_uri": result.path.as_uri(),
                "sslflow.embeddings_sha256": digest,
                "sslflow.embedder_fingerprint": result.meta()["fingerprint"],
            }
        )
        run.log_artifact(out / "meta.json")
        run.log_artifact(out / "embedder.json")
        metadata = {
            "rows": len(array),
            "dim": int(array.shape[1]),
            "embedder": embedder,
            ROUND_KEY: curation_round,
            "path": dg.MetadataValue.path(str(result.path)),
            "sha256": digest,
            INPUT_FINGERPRINT: inputs,
            **run_metadata(run),
        }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(digest))


@dg.asset_check(
    asset=embeddings, blocking=True, description="no NaN or inf in the embedding memmap"
)
def embeddings_finite(home: SslflowHome) -> dg.AssetCheckResult:
    result = load_embeddings(home.asset_dir("embeddings"))
    invalid = find_invalid_rows(result.array())
    keys = result.keys()
    return dg.AssetCheckResult(
        passed=not len(invalid),
        metadata={
            "invalid_rows": len(invalid),
            "example_keys": ", ".join(keys[i] for i in invalid[:10]),
        },
    )
