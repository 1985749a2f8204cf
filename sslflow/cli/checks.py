"""What the command prints about a run's asset checks: one line each, and why a failed one fails.

Every check the run evaluated is printed after the assets it materialised. A failed check of
ERROR severity (Dagster's default), blocking or not, makes the command exit non-zero with the
check's own explanation (its result's description: the numbers and the fix) and, for a blocking
one, the assets it kept from running. A failed WARN check (e.g. knn_beats_raw_pixels: a short
demo model may not beat raw pixels) is printed as a warning and leaves the exit status alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg


def _value(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def is_error(evaluation: dg.AssetCheckEvaluation) -> bool:
    """A failed check that fails the command: severity ERROR (a WARN one only warns)."""
    import dagster as dg

    return not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR


def check_lines(result: dg.ExecuteInProcessResult) -> list[str]:
    """``<asset> check <name>: passed|FAILED|warning {metadata}`` per check evaluation."""
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        shown = {k: _value(v.value) for k, v in evaluation.metadata.items()}
        verdict = "passed" if evaluation.passed else "FAILED" if is_error(evaluation) else "warning"
        lines.append(
            f"{evaluation.asset_key.to_user_string()} check {evaluation.check_name}: "
            f"{verdict} {shown}"
        )
    return lines


def _not_run(result: dg.ExecuteInProcessResult) -> list[str]:
    """Selected assets whose step never started (Dagster logs, but records no event for, a
    step it does not execute because a dependency failed); sslflow's asset steps are named as
    their assets."""
    started = {event.step_key for event in result.all_events if event.is_step_start}
    selected = {key.to_user_string() for key in result.job_def.asset_layer.selected_asset_keys}
    return sorted(selected - started)


def failed_check_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """``<asset> check <name> failed: <why>`` per failed ERROR check, saying what a blocking
    one stopped."""
    messages = []
    for evaluation in result.get_asset_check_evaluations():
        if not is_error(evaluation):
            continue
        why = evaluation.description or ", ".join(
            f"{k} {_value(v.value)}" for k, v in evaluation.metadata.items()
        )
        message = f"{evaluation.asset_key.to_user_string()} check {evaluation.check_name} failed"
        message += f": {why}" if why else ""
        if evaluation.blocking:
            skipped = _not_run(result)
            message += (
                f"\n(blocking: not run: {', '.join(skipped)})"
                if skipped
                else "\n(blocking: nothing downstream was selected)"
            )
        messages.append(message)
    return messages
