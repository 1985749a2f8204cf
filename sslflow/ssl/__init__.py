"""Self-supervised pretraining (plain Python, no Dagster).

Modules (imported on demand: torch, timm and lightly are slow to import):

- ``backbones``: timm backbones adapted to small images (``create_backbone``).
- ``export``: ``FrozenBackbone``, ``save_backbone`` / ``load_backbone`` (file or MLflow
  registry), ``random_backbone``, ``timm_backbone``, ``log_backbone_model``.
- ``methods``: SimCLR, MoCo, SwAV and AMCL behind ``SSLMethod`` / ``build_method``.
- ``augment``: batched tensor views of a ``ViewSpec``.
- ``config``: ``PretrainConfig``; ``loader``: resumable shard batches; ``module``: the
  LightningModule; ``knn_monitor``: online kNN accuracy; ``train``: ``pretrain`` and the
  ``python -m sslflow.ssl.train`` / ``torchrun`` entry point.
"""
