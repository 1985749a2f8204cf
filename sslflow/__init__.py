"""sslflow: curate, pretrain and probe self-supervised image backbones."""

__version__ = "0.1.0"
