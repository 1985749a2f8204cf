"""What each torchrun rank runs: ``python -m sslflow.pipelines.torchrun_rank <module> <args>``.

The rank side of :mod:`sslflow.pipelines.torchrun`, kept apart from it because that module
defines Dagster resources and so imports ``dagster`` (seconds, and a dependency the ranks do not
need); this one imports only the light ``dagster_pipes``. Rank 0 opens the Pipes channel and
forwards the ``sslflow`` loggers' records to the launching asset's log; the other ranks just
run the entry point (every rank inherits the DAGSTER_PIPES_* variables, and a second channel
makes Dagster log "unexpected message received after closed"). ``<module>.main(args)`` is a
core entry point (``sslflow.ssl.launch``, ``sslflow.curation.distributed``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence


class _PipesHandler(logging.Handler):
    """Sends log records to a Pipes logger (which streams them back to Dagster)."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, record.getMessage())


def main(argv: Sequence[str] | None = None) -> None:
    module, *arguments = sys.argv[1:] if argv is None else argv
    entry = importlib.import_module(module).main
    if int(os.environ.get("RANK", "0")) != 0:
        entry(arguments)
        return
    from dagster_pipes import open_dagster_pipes

    logger = logging.getLogger("sslflow")
    with open_dagster_pipes() as pipes:
        handler = _PipesHandler(pipes.log)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            entry(arguments)
        finally:
            logger.removeHandler(handler)


if __name__ == "__main__":
    main()
