"""Copy fingerprints of the raw pool and of eval_split's test images, kept under the sslflow home.

``<home>/fingerprints/<name>`` depends only on the shard content (not on the embedder), so later
curation rounds reuse it; kmeans_hierarchy compares them to remove copies before clustering.
"""

from collections.abc import Sequence

import dagster as dg

from sslflow.curation.build import EvalCopies
from sslflow.curation.fingerprints import CopyFeatures, fingerprint_shards
from sslflow.data import Manifest
from sslflow.pipelines.assets.data import raw_manifest
from sslflow.pipelines.failures import bad_input
from sslflow.pipelines.resources import SslflowHome


def pool_copies(home: SslflowHome, keys: Sequence[str]) -> CopyFeatures:
    """The raw pool's copy features, row-aligned with the embeddings' ``keys``."""
    found = fingerprint_shards(raw_manifest(home), home.path() / "fingerprints" / "pool")
    if found.keys() != list(keys):
        raise bad_input(
            f"the copy fingerprints at {found.root} do not follow the embeddings' keys: "
            "rematerialise embeddings (raw_shards changed since)"
        )
    return found.features()


def eval_copies(context: dg.AssetExecutionContext, home: SslflowHome) -> EvalCopies | None:
    """eval_split's test images, or None (logged) when eval_split was never materialised."""
    path = home.asset_dir("eval_split") / "test" / "manifest.json"
    if not path.is_file():
        context.log.warning(
            f"no eval_split test set at {path}: the pool is not decontaminated against "
            "evaluation images; materialise eval_split before kmeans_hierarchy to do so"
        )
        return None
    found = fingerprint_shards(Manifest.load(path), home.path() / "fingerprints" / "eval_test")
    return EvalCopies(found.features(), found.keys(), str(path.parent))
