"""Self-supervised pretraining (plain Python, no Dagster).

Backbones, preprocessing and the exported ``FrozenBackbone`` live in :mod:`sslflow.models`;
training builds and exports through them. Modules (imported on demand: torch, timm and
lightly are slow to import):

- ``methods``: SimCLR, MoCo, SwAV and AMCL behind ``SSLMethod`` / ``build_method``.
- ``augment``: batched tensor views of a ``ViewSpec``.
- ``config``: ``PretrainConfig``; ``loader``: resumable shard batches; ``module``: the
  LightningModule; ``callbacks``: metrics to a hook on rank 0; ``knn_monitor``: online kNN
  accuracy; ``train``: ``pretrain``; ``launch``: the ``python -m sslflow.ssl.launch`` /
  ``torchrun`` entry point.
"""
