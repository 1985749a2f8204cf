"""The assets of each stage, in order: the one list the jobs, sensors and the CLI share.

Plain names, no Dagster import, so ``sslflow --help`` stays instant.
"""

INGEST = ("raw_shards",)
CURATION = ("embeddings", "kmeans_hierarchy", "curated_index", "curated_shards")
PRETRAINING = ("pretrained_model",)
EVAL_SPLIT = ("eval_split",)
PROBING = ("probe_features", "knn_probe", "linear_probe", "probing_report")
