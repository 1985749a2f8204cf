"""The ``sslflow`` command (``sslflow.cli.main:main``) and what it runs assets with: the
in-process runner, the demo and the generated configuration reference."""
