"""The ``sslflow`` command: one subcommand per stage, each materialising the stage's assets.

Every stage runs through Dagster in-process on the persistent instance of the sslflow home, so
what you run here shows up in the Dagster UI and in MLflow exactly as runs launched there.
Heavy imports (torch, dagster, mlflow) happen inside the subcommands, so ``--help`` is instant.
An error prints as one short block (its message, the Dagster run holding the full logs); ``--debug``
lets it propagate with the whole traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslflow.fields import attribute_docs
from sslflow.ssl.config import PretrainConfig

if TYPE_CHECKING:
    import dagster as dg

SOURCE_HELP = "fashion-mnist (default), cifar10, cifar100, image-folder, digits, shards"
DEBUG_HELP = (
    "on an error, show the full traceback (and Dagster's stack traces) and exit with status 1, "
    "instead of the short message"
)
DEBUG_HINT = "rerun with --debug for the traceback"


class CliError(Exception):
    """Command-line input the user fixes (a bad --set or --config); printed as its message alone."""


class RunFailedError(Exception):
    """A Dagster run that failed: one message per failed step, and the run that has the full logs."""

    def __init__(self, messages: list[str], run_id: str) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages
        self.run_id = run_id


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        help="sslflow home for shards, memmaps, checkpoints, MLflow (default $SSLFLOW_HOME or ./.sslflow)",
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
        help="override one config field, e.g. --set raw_shards.shard_size=2000 (repeatable; VALUE is YAML)",
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
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace the shard set when the source or config changed (default); --no-overwrite refuses",
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
        description="Curate, pretrain and probe self-supervised image backbones. Each stage is a Dagster "
        "asset tracked in MLflow; these commands materialise them from the shell.",
        epilog="Start with `sslflow demo`, then `sslflow ui` to browse the runs.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run every stage on Fashion-MNIST (or, without it, scikit-learn's digits) and print where to look",
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

    probe = sub.add_parser(
        "probe",
        help="kNN and linear probes of a model plus the report (assets probe_features → probing_report)",
    )
    probe.add_argument(
        "--model",
        help="models:/sslflow-<method>@current, models:/<name>/<version> or a checkpoint file (default: newest registered sslflow model)",
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


def _materialize(
    selection: Sequence[str], config: dict[str, dict[str, Any]], args: argparse.Namespace
) -> int:
    """Run the assets; a failed run raises (``--debug``: the step's exception, else RunFailedError)."""
    from sslflow.pipelines.runner import materialize_assets

    debug = args.debug
    result = materialize_assets(
        selection, config, home=args.home, raise_on_error=debug, brief_errors=not debug
    )
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        shown = {
            k: meta[k] for k in ("samples", "shards", "total_size", "mlflow_run_id") if k in meta
        }
        print(f"{event.asset_key.to_user_string()}: {shown}")
    if not result.success:
        raise RunFailedError(_failure_messages(result), result.run_id)
    return 0


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """``step: message`` per failed step: a Failure's description, else the first non-Dagster error."""
    messages = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(f"{event.step_key}: {data.user_failure_data.description}")
            continue
        error = data.error
        while (
            error is not None and error.cause is not None and error.cls_name.startswith("Dagster")
        ):
            error = (
                error.cause
            )  # DagsterExecutionStepExecutionError and kin wrap the user's exception
        text = error.message.strip() if error is not None else "failed"
        qualified, sep, rest = text.partition(": ")
        messages.append(
            f"{event.step_key}: {rest if sep and qualified.startswith('sslflow.') else text}"
        )
    return messages or [f"Dagster run {result.run_id} failed"]


def _config_message(message: str) -> str:
    """Dagster's config error in --set terms (``root:ops:raw_shards:config:x`` → ``raw_shards.x``)."""
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
    """What went wrong, for people: sslflow's own errors and Dagster failures as their message alone,
    other exceptions with their type (``FileNotFoundError: ...``), as a traceback's last line."""
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


CURATION_STAGE = ("embeddings", "kmeans_hierarchy", "curated_index", "curated_shards")
PROBING_STAGE = ("probe_features", "knn_probe", "linear_probe", "probing_report")
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
    "overwrite",
)


def _list_assets(markdown: bool) -> int:
    from sslflow.pipelines.definitions import defs

    if markdown:
        from sslflow.pipelines.reference import config_reference_markdown

        print(config_reference_markdown(defs), end="")
        return 0

    for asset in defs.assets or []:
        for key in asset.keys:  # type: ignore[union-attr]
            name = key.to_user_string()
            op = asset.node_def  # type: ignore[union-attr]
            schema = op.config_schema.as_field().config_type if op.config_schema else None
            fields = (
                ", ".join(sorted(schema.fields))
                if schema is not None and hasattr(schema, "fields")
                else ""
            )
            print(f"{name}: {fields}")
    return 0


def run_ui(home: str | None, host: str, dagster_port: int, mlflow_port: int) -> int:
    """Start ``dagster dev`` and ``mlflow ui`` on the same home; stop both on Ctrl-C."""
    from sslflow.paths import sslflow_home
    from sslflow.pipelines.runner import dagster_home

    root = sslflow_home(home)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SSLFLOW_HOME": str(root), "DAGSTER_HOME": str(dagster_home(root))}
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    bin_dir = Path(sys.executable).parent
    dagster_cmd = [str(bin_dir / "dagster"), "dev", "-h", host, "-p", str(dagster_port)]
    dagster_cmd += (
        ["-w", str(workspace)] if workspace.exists() else ["-m", "sslflow.pipelines.definitions"]
    )
    mlflow_cmd = [
        str(bin_dir / "mlflow"),
        "ui",
        "--host",
        host,
        "--port",
        str(mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "mlartifacts").as_uri(),
    ]
    processes = [
        subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in (dagster_cmd, mlflow_cmd)
    ]
    print(
        f"Dagster UI: http://{host}:{dagster_port}\nMLflow UI:  http://{host}:{mlflow_port}\n(Ctrl-C stops both)",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error prints :func:`error_report` and returns 1 (``--debug``: it raises)."""
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
        from sslflow.pipelines.demo import run_demo

        result = run_demo(args.home, args.source, debug=args.debug)
        if not result.success:
            raise RunFailedError(_failure_messages(result), result.run_id)
        return 0
    if args.command == "ingest":
        return _materialize(
            ["raw_shards"], load_run_config(args, "raw_shards", (*SOURCE_FLAGS, "split")), args
        )
    if args.command == "eval-split":
        return _materialize(["eval_split"], load_run_config(args, "eval_split", SOURCE_FLAGS), args)
    if args.command == "curate":
        return _materialize(CURATION_STAGE, load_run_config(args), args)
    if args.command == "pretrain":
        return _materialize(
            ["pretrained_model"], load_run_config(args, "pretrained_model", PRETRAIN_FLAGS), args
        )
    if args.command == "probe":
        return _materialize(
            PROBING_STAGE, load_run_config(args, "probe_features", ("model",)), args
        )
    if args.command == "materialize":
        return _materialize(args.assets, load_run_config(args), args)
    if args.command == "assets":
        return _list_assets(args.markdown)
    if args.command == "ui":
        return run_ui(args.home, args.host, args.dagster_port, args.mlflow_port)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
