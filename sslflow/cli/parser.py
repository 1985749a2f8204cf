"""The ``sslflow`` command line: subcommands, their flags, and per-asset config from
--config, --set and the stage flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sslflow.cli.errors import CliError
from sslflow.fields import attribute_docs
from sslflow.ssl.config import PretrainConfig

SOURCE_HELP = "fashion-mnist (default), cifar10, cifar100, image-folder, digits, shards"
DEBUG_HELP = (
    "on an error, show the full traceback (and Dagster's stack traces) and exit with status 1, "
    "instead of the short message"
)

# Process-local PretrainConfig fields the asset sets itself (see PretrainedModelConfig).
PRETRAIN_FLAGS = tuple(
    f.name for f in dataclasses.fields(PretrainConfig) if f.name not in ("progress_bar", "strategy")
)
SOURCE_FLAGS = (
    "source",
    "path",
    "shard_size",
    "max_bytes",
    "max_side",
    "jpeg_quality",
    "download",
    "allow_pipe",
    "overwrite",
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        help=(
            "sslflow home for shards, memmaps, checkpoints, MLflow (default $SSLFLOW_HOME or "
            "./.sslflow)"
        ),
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file of per-asset config: {asset_name: {field: value}}"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ASSET.FIELD=VALUE",
        help=(
            "override one config field, e.g. --set raw_shards.shard_size=2000 (repeatable; "
            "VALUE is YAML)"
        ),
    )


def _add_source(parser: argparse.ArgumentParser, with_split: bool) -> None:
    parser.add_argument("--source", help=SOURCE_HELP)
    parser.add_argument("--path", help="folder, manifest.json or shard URL list of the source")
    if with_split:
        parser.add_argument(
            "--split", choices=["train", "test", "all"], help="split of the source (default train)"
        )
    parser.add_argument("--shard-size", type=int, help="samples per shard (default 5000)")
    parser.add_argument(
        "--max-bytes", type=int, help="bytes per shard before a new one starts (default 1 GiB)"
    )
    parser.add_argument(
        "--max-side",
        type=int,
        help="downscale images whose longer side exceeds N px, stored as JPEG (default 0: keep)",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, help="JPEG quality of downscaled images (default 90)"
    )
    parser.add_argument(
        "--download", action="store_true", default=None, help="allow downloading Fashion-MNIST"
    )
    parser.add_argument(
        "--allow-pipe",
        action="store_true",
        default=None,
        help=(
            "shards: run the pipe: commands in --path (or in the URL list it names) as shell "
            "commands; off by default, never for inbox entries"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "replace the shard set when the source or config changed (default); --no-overwrite "
            "refuses"
        ),
    )


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _add_dataclass_flags(parser: argparse.ArgumentParser, core: type, names: Sequence[str]) -> None:
    """``--field-name VALUE`` for each of ``names``, described and defaulted by the dataclass."""
    docs = attribute_docs(core)
    defaults = {f.name: f.default for f in dataclasses.fields(core)}
    for name in names:
        default = defaults[name]
        shown = "" if default is dataclasses.MISSING else f" (default: {default!r})"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_yaml_value,
            metavar="VALUE",
            help=docs[name] + shown,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslflow",
        description="Curate, pretrain and probe self-supervised image backbones. Each stage is a "
        "Dagster asset tracked in MLflow; these commands materialise them from the shell.",
        epilog="Start with `sslflow demo`, then `sslflow ui` to browse the runs.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help=(
            "run every stage on Fashion-MNIST (or, without it, scikit-learn's digits) and print "
            "where to look"
        ),
    )
    demo.add_argument("--home", help="sslflow home (default $SSLFLOW_HOME or ./.sslflow)")
    demo.add_argument(
        "--source",
        default="auto",
        choices=["auto", "fashion-mnist", "digits"],
        help="auto (default): Fashion-MNIST when installed, else the bundled digits",
    )

    ingest = sub.add_parser(
        "ingest", help="write a source into WebDataset shards (asset raw_shards)"
    )
    _add_source(ingest, with_split=True)
    _add_common(ingest)

    split = sub.add_parser(
        "eval-split",
        help="write the labelled train/test shards used by the probes (asset eval_split)",
    )
    _add_source(split, with_split=False)
    _add_common(split)

    curate = sub.add_parser(
        "curate",
        help="embed, cluster (hierarchical k-means), sample and write the curated shards "
        "(assets embeddings → curated_shards) from a YAML config",
    )
    _add_common(curate)

    pretrain = sub.add_parser(
        "pretrain",
        help="pretrain a backbone with SwAV, SimCLR, MoCo or AMCL (asset pretrained_model)",
        description="Every field of sslflow.ssl.config.PretrainConfig is a flag (VALUE is YAML).",
    )
    _add_dataclass_flags(pretrain, PretrainConfig, PRETRAIN_FLAGS)
    _add_common(pretrain)

    rounds = sub.add_parser(
        "rounds",
        help="the curation loop: pretrain on the raw pool (round 0, once), then per round embed "
        "the pool with the latest model, curate, and pretrain on the curated shards",
        description="Round 0 runs only when the home has no pretrained model yet. Every field "
        "of sslflow.ssl.config.PretrainConfig is a flag (VALUE is YAML) and applies to every "
        "round's pretraining.",
    )
    rounds.add_argument(
        "--rounds", type=int, default=1, help="curation rounds after round 0 (default 1)"
    )
    _add_dataclass_flags(rounds, PretrainConfig, PRETRAIN_FLAGS)
    _add_common(rounds)

    probe = sub.add_parser(
        "probe",
        help=(
            "kNN and linear probes of a model plus the report (assets probe_features → "
            "probing_report)"
        ),
    )
    probe.add_argument(
        "--model",
        help=(
            "models:/sslflow-<method>@current, models:/<name>/<version> or a checkpoint file "
            "(default: newest registered sslflow model)"
        ),
    )
    _add_common(probe)

    materialize = sub.add_parser(
        "materialize", help="materialise any assets by name, with --config/--set"
    )
    materialize.add_argument("assets", nargs="+", help="asset names, e.g. raw_shards eval_split")
    _add_common(materialize)

    assets = sub.add_parser("assets", help="list the assets and their config fields")
    assets.add_argument(
        "--markdown",
        action="store_true",
        help="print the full configuration reference (docs/configuration.md)",
    )
    assets.add_argument(
        "--definitions",
        action="store_true",
        help="print the tables of assets, jobs, schedules and sensors (docs/definitions.md)",
    )

    ui = sub.add_parser(
        "ui", help="start the Dagster UI and the MLflow UI on 127.0.0.1 and print their URLs"
    )
    ui.add_argument("--home", help="sslflow home (default $SSLFLOW_HOME or ./.sslflow)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    for (
        command
    ) in sub.choices.values():  # also after the command; SUPPRESS keeps a --debug before it
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["raw_shards.shard_size=2000"]`` → ``{"raw_shards": {"shard_size": 2000}}``."""
    import yaml

    config: dict[str, dict[str, Any]] = {}
    for item in overrides:
        target, sep, value = item.partition("=")
        asset, dot, field = target.partition(".")
        if not sep or not dot or not asset or not field:
            raise CliError(
                f"--set {item!r}: expected ASSET.FIELD=VALUE, e.g. raw_shards.shard_size=2000"
            )
        try:
            config.setdefault(asset, {})[field] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CliError(
                f"--set {item!r}: VALUE is not valid YAML ({getattr(exc, 'problem', exc)})"
            ) from exc
    return config


def load_run_config(
    args: argparse.Namespace, asset: str | None = None, flags: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Merge --config, then --set, then the stage's own flags (later wins)."""
    import yaml

    config: dict[str, dict[str, Any]] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except OSError as exc:
            raise CliError(f"--config {args.config}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise CliError(f"--config {args.config} is not valid YAML:\n{exc}") from exc
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise CliError(
                f"--config {args.config}: expected a mapping of asset name to config mapping"
            )
        config.update({k: dict(v) for k, v in loaded.items()})
    for name, values in parse_overrides(args.overrides).items():
        config.setdefault(name, {}).update(values)
    if asset:
        for flag in flags:
            value = getattr(args, flag, None)
            if value is not None:
                config.setdefault(asset, {})[flag] = value
    return config
