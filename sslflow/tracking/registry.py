"""The MLflow model registry and logged models, through explicit clients (plain Python).

Registry names and lookups (pinning a moving alias to the version it names now), logging a
PyTorch module as an MLflow model, and downloading a model's files. Every call names its
tracking store (:func:`sslflow.tracking.client`), so two stores in one process never mix.

A model logged by :func:`log_torch_model` is an MLflow ``pytorch`` model whose folder also
holds plain files (e.g. an sslflow checkpoint) beside ``MLmodel``; readers fetch those files
with :func:`download_model_file` and never unpickle the module.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from sslflow.tracking import client

REGISTRY_PREFIX = "sslflow-"
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
MODEL_NAME = "model"  # the logged model's name (its artifact folder in MLflow 3)


def is_model_uri(spec: str) -> bool:
    """Whether ``spec`` is an MLflow model URI rather than a file path or a model name."""
    return spec.startswith(MODEL_URI_SCHEMES)


def registry_name(method: str) -> str:
    """Registered model name of an SSL method's backbones: ``sslflow-<method>``."""
    return REGISTRY_PREFIX + method


def registry_listing(tracking_uri: str | None) -> str:
    """``name (@alias, …); …`` of every registered model, for error messages."""
    rows = []
    for model in client(tracking_uri).search_registered_models():
        aliases = ", ".join(f"@{alias}" for alias in sorted(model.aliases or {}))
        rows.append(f"{model.name} ({aliases or 'no aliases'})")
    return "; ".join(rows) or "no registered models"


def sslflow_versions(mlflow_client: MlflowClient) -> list[ModelVersion]:
    """Every version of every ``sslflow-*`` registered model."""
    return list(mlflow_client.search_model_versions(f"name LIKE '{REGISTRY_PREFIX}%'"))


def latest_registered_model(tracking_uri: str | None) -> str | None:
    """``models:/<name>/<version>`` of the newest version of any ``sslflow-*`` registered model."""
    versions = client(tracking_uri).search_model_versions(
        f"name LIKE '{REGISTRY_PREFIX}%'", max_results=1, order_by=["creation_timestamp DESC"]
    )
    return f"models:/{versions[0].name}/{versions[0].version}" if versions else None


def pin_model_uri(spec: str, tracking_uri: str | None = None) -> str:
    """The registered version a moving model URI names right now: ``models:/<name>@<alias>`` and
    ``models:/<name>/latest`` become ``models:/<name>/<version>``; any other spec is returned as it
    is. Runs record the pinned URI, so their inputs say exactly which weights they used.

    Raises:
        ValueError: the name or alias is not in the registry (the message lists what is).
    """
    if not spec.startswith("models:/"):
        return spec
    reference = spec[len("models:/") :]
    name, alias = (
        reference.split("@", 1) if "@" in reference else (reference.rsplit("/", 1)[0], None)
    )
    if alias is None and not reference.endswith("/latest"):
        return spec  # models:/<name>/<version> or models:/<model id>: already exact
    registry = client(tracking_uri)
    try:
        if alias is not None:
            version = registry.get_model_version_by_alias(name, alias).version
        else:
            found = registry.search_model_versions(
                f"name = '{name}'", order_by=["version_number DESC"], max_results=1
            )
            if not found:
                raise MlflowException(f"registered model {name!r} has no versions")
            version = found[0].version
    except MlflowException as exc:
        raise ValueError(
            f"cannot resolve MLflow model {spec!r}: {exc.message}. Registered models: "
            f"{registry_listing(tracking_uri)}"
        ) from exc
    return f"models:/{name}/{version}"


def training_run_id(spec: str, tracking_uri: str | None) -> str | None:
    """The run that produced a model URI's weights (``models:/<name>…``, ``runs:/…``), or None."""
    if spec.startswith("runs:/"):
        return spec[len("runs:/") :].split("/", 1)[0]
    if not spec.startswith("models:/"):
        return None
    registry = client(tracking_uri)
    name_and_ref = spec[len("models:/") :]
    if "@" in name_and_ref:
        name, alias = name_and_ref.split("@", 1)
        return str(registry.get_model_version_by_alias(name, alias).run_id)
    name, version = name_and_ref.split("/", 1)
    return str(registry.get_model_version(name, version).run_id)


@dataclass(frozen=True)
class LoggedModelRef:
    """Where a model went in MLflow: the model URI, and the registered name/version/alias."""

    model_uri: str
    registered_name: str | None
    version: str | None
    alias: str | None

    @property
    def version_uri(self) -> str | None:
        """``models:/<name>/<version>``: this exact version, whatever the alias points to later."""
        if self.registered_name is None:
            return None
        return f"models:/{self.registered_name}/{self.version}"

    @property
    def registry_uri(self) -> str | None:
        """``models:/<name>@<alias>`` (or ``/<version>``) when registered."""
        if self.registered_name is None:
            return None
        if self.alias:
            return f"models:/{self.registered_name}@{self.alias}"
        return self.version_uri


def log_torch_model(
    module: Any,
    run_id: str,
    tracking_uri: str,
    metadata: Mapping[str, Any],
    files: Sequence[Path] = (),
    pip_requirements: Sequence[str] = (),
    registered_name: str | None = None,
    alias: str | None = None,
    description: str = "",
) -> LoggedModelRef:
    """Log ``module`` as an MLflow ``pytorch`` model of run ``run_id``, with ``files`` beside it.

    Follows ``mlflow.pytorch.log_model`` step by step with an explicit client (that function
    reads the process-global tracking URI): create the logged model, save it locally in the
    pickle flavour (which loads back as the same class), copy ``files`` into the model folder's
    top level, upload, mark it READY. ``pip_requirements`` spare MLflow ~20 s of inference.
    When ``registered_name`` is set a new version is registered, with ``description`` on the
    version (and on the registered model when this creates it), and ``alias`` moved to it.
    (MLflow reserves the alias ``latest``: ``models:/<name>/latest`` already means the newest.)
    """
    import shutil

    import mlflow.pytorch
    from mlflow.models import Model

    store = client(tracking_uri)
    experiment_id = store.get_run(run_id).info.experiment_id
    logged = store.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    store.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / MODEL_NAME
        mlmodel = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            metadata=dict(metadata),
            model_id=logged.model_id,
        )
        mlflow.pytorch.save_model(
            module,
            str(local),
            mlflow_model=mlmodel,
            serialization_format="pickle",
            pip_requirements=list(pip_requirements),
        )
        for path in files:
            shutil.copy2(path, local / path.name)
        store.log_model_artifacts(logged.model_id, str(local))
    store.finalize_logged_model(logged.model_id, "READY")
    model_uri = f"models:/{logged.model_id}"
    if registered_name is None:
        return LoggedModelRef(model_uri, None, None, None)
    with contextlib.suppress(MlflowException):  # already registered
        store.create_registered_model(registered_name, description=description or None)
    # source is the storage location, not models:/<id>: MLflow's SQL registry resolves that
    # through the process-global tracking URI
    version = store.create_model_version(
        registered_name,
        source=logged.artifact_location,
        run_id=run_id,
        model_id=logged.model_id,
        description=description or None,
    ).version
    if alias:
        store.set_registered_model_alias(registered_name, alias, version)
    return LoggedModelRef(model_uri, registered_name, str(version), alias or None)


def model_artifact_uri(model_uri: str, tracking_uri: str | None) -> str:
    """Where the files of the model a model URI names are: ``models:/<name>@<alias>``,
    ``models:/<name>/<version>``, ``models:/<name>/latest`` and ``models:/<model id>`` resolve
    through the registry or the logged model; ``runs:/…`` and other URIs are already there."""
    if not model_uri.startswith("models:/"):
        return model_uri.rstrip("/")
    store = client(tracking_uri)
    reference = model_uri[len("models:/") :].rstrip("/")
    if "@" not in reference and "/" not in reference:
        return str(store.get_logged_model(reference).artifact_location)
    name, version = pin_model_uri(model_uri, tracking_uri)[len("models:/") :].rsplit("/", 1)
    return str(store.get_model_version_download_uri(name, version))


def download_model_file(
    model_uri: str, name: str, tracking_uri: str | None, folder: str | os.PathLike[str]
) -> Path:
    """Download one top-level file of a logged model (``MLmodel``, or one logged beside it).

    Raises:
        ValueError: the model URI cannot be resolved or has no such file; the message lists
            registered models and their aliases.
    """
    import mlflow.artifacts

    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_artifact_uri(model_uri, tracking_uri)}/{name}",
                dst_path=str(folder),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
    except (MlflowException, OSError) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise ValueError(
            f"cannot read {name} of MLflow model {model_uri!r} at {tracking_uri}: {message}. "
            f"Registered models: {registry_listing(tracking_uri)}"
        ) from exc


def model_metadata(model_uri: str, tracking_uri: str | None) -> dict[str, Any]:
    """The ``metadata`` a logged model was logged with (read from its ``MLmodel`` file)."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as folder:
        found = Model.load(str(download_model_file(model_uri, "MLmodel", tracking_uri, folder)))
    return dict(found.metadata or {})
