"""The ``sslflow`` command: one subcommand per stage, each materialising the stage's assets.

Every stage runs through Dagster in-process on the persistent instance of the sslflow home, so
what you run here shows up in the Dagster UI and in MLflow exactly as runs launched there.
Heavy imports (torch, dagster, mlflow) happen inside the subcommands, so ``--help`` is instant.
An error prints as one short block (its message, the Dagster run holding the full logs); ``--debug``
lets it propagate with the whole traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sslflow.cli.errors import CliError, error_report, raise_if_failed
from sslflow.cli.parser import PRETRAIN_FLAGS, SOURCE_FLAGS, build_parser, load_run_config
from sslflow.pipelines.stages import CURATION, EVAL_SPLIT, INGEST, PRETRAINING, PROBING


def _materialize(
    selection: Sequence[str],
    config: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    tags: dict[str, str] | None = None,
) -> int:
    """Run the assets, print what they made and their checks; a failed step or check raises
    (``--debug``: a failed step's exception, else RunFailedError)."""
    from sslflow.cli.checks import check_lines
    from sslflow.cli.runner import materialize_assets

    debug = args.debug
    result = materialize_assets(
        selection, config, home=args.home, tags=tags, raise_on_error=debug, brief_errors=not debug
    )
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        shown = {
            k: meta[k]
            for k in ("samples", "selected", "shards", "total_size", "mlflow_run_id")
            if k in meta
        }
        print(f"{materialization.asset_key.to_user_string()}: {shown}")
        if "class_balance" in meta:
            print(f"  {meta['class_balance']}")
    for line in check_lines(result):
        print(line)
    raise_if_failed(result)
    return 0


def _rounds(args: argparse.Namespace) -> int:
    """Round 0 when the home has no pretrained model, then ``--rounds`` curation rounds, each a
    Dagster run of the round's assets (see :mod:`sslflow.pipelines.rounds`)."""
    import dagster as dg

    from sslflow.cli.runner import dagster_home
    from sslflow.paths import sslflow_home
    from sslflow.pipelines import rounds

    if args.rounds < 1:
        raise CliError(f"--rounds {args.rounds}: give at least 1 curation round")
    config = load_run_config(args, "pretrained_model", PRETRAIN_FLAGS)
    try:
        bootstrap = rounds.with_round_fields(config, rounds.BOOTSTRAP_CONFIG)
        each_round = rounds.with_round_fields(config, rounds.ROUND_CONFIG)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    dagster_home(sslflow_home(args.home))
    instance = dg.DagsterInstance.get()
    if not rounds.has_pretrained_model(instance):
        print("round 0: pretraining on raw_shards (no pretrained model in this home yet)")
        _materialize(rounds.BOOTSTRAP_ASSETS, bootstrap, args, {rounds.ROUND_TAG: "0"})
    for _ in range(args.rounds):
        number = rounds.latest_round(instance) + 1
        print(f"round {number}: embed with the latest model, curate, pretrain on curated_shards")
        _materialize(rounds.ROUND_ASSETS, each_round, args, {rounds.ROUND_TAG: str(number)})
    return 0


def _list_assets(markdown: bool, definitions: bool) -> int:
    """One line per asset with its config fields, or a generated reference page."""
    import dagster as dg

    from sslflow.cli.reference import config_reference_markdown, definitions_reference_markdown
    from sslflow.pipelines.definitions import ASSETS, defs

    if markdown or definitions:
        page = config_reference_markdown if markdown else definitions_reference_markdown
        print(page(defs), end="")
        return 0
    for asset in ASSETS:
        assert isinstance(asset, dg.AssetsDefinition)  # sslflow defines only @dg.asset assets
        schema = asset.node_def.config_schema
        config_type = schema.as_field().config_type if schema else None
        fields = sorted(getattr(config_type, "fields", {}))
        for key in asset.keys:
            print(f"{key.to_user_string()}: {', '.join(fields)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error prints :func:`error_report` and returns 1 (``--debug``: it
    raises)."""
    args = build_parser().parse_args(argv)
    if args.debug:
        return _run(args)
    try:
        return _run(args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        print(error_report(args.command, exc), file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    """Dispatch to the command; errors propagate to :func:`main`."""
    if args.command == "demo":
        from sslflow.cli.demo import run_demo

        raise_if_failed(run_demo(args.home, args.source, debug=args.debug))
        return 0
    if args.command == "ingest":
        return _materialize(
            INGEST, load_run_config(args, "raw_shards", (*SOURCE_FLAGS, "split")), args
        )
    if args.command == "eval-split":
        return _materialize(EVAL_SPLIT, load_run_config(args, "eval_split", SOURCE_FLAGS), args)
    if args.command == "curate":
        return _materialize(CURATION, load_run_config(args), args)
    if args.command == "pretrain":
        return _materialize(
            PRETRAINING, load_run_config(args, "pretrained_model", PRETRAIN_FLAGS), args
        )
    if args.command == "rounds":
        return _rounds(args)
    if args.command == "probe":
        return _materialize(PROBING, load_run_config(args, "probe_features", ("model",)), args)
    if args.command == "materialize":
        return _materialize(args.assets, load_run_config(args), args)
    if args.command == "assets":
        return _list_assets(args.markdown, args.definitions)
    if args.command == "ui":
        from sslflow.cli.ui import run_ui

        return run_ui(args.home, args.host, args.dagster_port, args.mlflow_port)
    raise AssertionError(f"unhandled command {args.command}")
