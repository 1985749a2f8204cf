"""What a failed command prints: its errors in the user's terms, and where the full logs are."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg
    from dagster._utils.error import SerializableErrorInfo

DEBUG_HINT = "rerun with --debug for the traceback"
# what Dagster raises in the step of a blocking asset check that failed
BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"


class CliError(Exception):
    """Command-line input the user fixes (a bad --set or --config); printed as its message alone."""


class RunFailedError(Exception):
    """A Dagster run that failed: one message per failed step, and the run that has the full
    logs."""

    def __init__(self, messages: list[str], run_id: str) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages
        self.run_id = run_id


def _is_dagster_wrapper(error: SerializableErrorInfo) -> bool:
    return (error.cls_name or "").startswith("Dagster")


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed check (:func:`~sslflow.cli.checks.failed_check_messages`), then ``step:
    message`` per other failed step: a Failure's description, else the first non-Dagster error."""
    from sslflow.cli.checks import failed_check_messages

    messages = failed_check_messages(result)
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.error is not None and data.error.cls_name == BLOCKING_CHECK_ERROR:
            continue  # a blocking check that failed: its evaluation is reported above
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(f"{event.step_key}: {data.user_failure_data.description}")
            continue
        error = data.error
        # DagsterExecutionStepExecutionError and kin wrap the user's exception
        while error is not None and error.cause is not None and _is_dagster_wrapper(error):
            error = error.cause
        text = error.message.strip() if error is not None else "failed"
        qualified, sep, rest = text.partition(": ")
        messages.append(
            f"{event.step_key}: {rest if sep and qualified.startswith('sslflow.') else text}"
        )
    return messages or [f"Dagster run {result.run_id} failed"]


def raise_if_failed(result: dg.ExecuteInProcessResult) -> None:
    """Raise :class:`RunFailedError` when a step or an ERROR asset check (blocking or not)
    failed; a failed WARN check only warns (see :mod:`sslflow.cli.checks`)."""
    from sslflow.cli.checks import is_error

    if not result.success or any(map(is_error, result.get_asset_check_evaluations())):
        raise RunFailedError(failure_messages(result), result.run_id)


def _config_message(message: str) -> str:
    """Dagster's config error in --set terms (``root:ops:raw_shards:config:x`` →
    ``raw_shards.x``)."""
    message = re.sub(
        r"path root:ops:(\w+):config((?::\w+)*)", lambda m: m[1] + m[2].replace(":", "."), message
    )
    message = re.sub(
        r'entry "(\w+)" at path root:ops\.', r'entry "\1": not an asset of this run.', message
    )
    if " Expected: " in message:  # the whole schema, often hundreds of characters
        message = (
            message.partition(" Expected: ")[0] + " (`sslflow assets` lists each asset's fields)"
        )
    return message


def error_messages(exc: BaseException) -> list[str]:
    """What went wrong, for people: sslflow's own errors and Dagster failures as their message
    alone, other exceptions with their type (``FileNotFoundError: ...``), as a traceback's last
    line."""
    if isinstance(exc, RunFailedError):
        return exc.messages
    if type(exc).__module__.startswith("sslflow") or isinstance(exc, CliError):  # __main__ under -m
        return [str(exc)]
    import dagster as dg  # after the checks above: a bad --set prints without loading dagster

    if isinstance(exc, dg.Failure) and exc.description:
        return [exc.description]
    if isinstance(exc, dg.DagsterInvalidConfigError) and exc.errors:
        return [_config_message(error.message) for error in exc.errors]
    if isinstance(exc, dg.DagsterUserCodeExecutionError) and exc.user_exception is not None:
        return error_messages(exc.user_exception)
    return [f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]


def error_report(command: str, exc: BaseException) -> str:
    """``sslflow <command>: error: <message>`` per message, then where the details are."""
    lines = [
        f"sslflow {command}: error: " + message.replace("\n", "\n  ")
        for message in error_messages(exc)
    ]
    if isinstance(exc, RunFailedError):
        lines.append(
            f"  full logs: Dagster run {exc.run_id} (`sslflow ui`, Runs tab); {DEBUG_HINT}"
        )
    else:
        lines.append(f"  {DEBUG_HINT}")
    return "\n".join(lines)
