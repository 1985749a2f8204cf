"""Failures the assets raise: bad input fails a run at once, anything else is retried."""

import dagster as dg


def bad_input(message: str) -> dg.Failure:
    """A Failure for bad config or missing inputs: fails the run at once, never retried.

    The jobs' retry policy (``sslflow.pipelines.jobs.RETRY``) retries transient failures (I/O,
    a tracking server that blips); retrying cannot fix input, so this Failure disallows it.
    """
    return dg.Failure(message, allow_retries=False)
