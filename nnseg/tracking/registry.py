"""The MLflow model registry as nnseg reads it: which store, a checked client, and a registered model downloaded
into a local folder (cached by MLflow's model id, its checkpoints checked against the hashes recorded at
registration). Writing registered models is :mod:`nnseg.deploy.registry`'s, through :func:`registry_client`.

No environment variable and no global MLflow setting is written: every call goes through an explicit
``MlflowClient`` or passes the tracking URI along.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnseg.digest import CONTENT_KEY, content_sha256, mismatched_file
from nnseg.errors import NnsegError, first_line
from nnseg.tracking.probe import probe_server
from nnseg.tracking.uri import default_tracking_uri, is_http, sqlite_path
from nnseg.workspace import DEFAULT_WORK_DIR, Workspace

#: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))/?$")
#: the folder name of a registered model's folder inside the MLflow model (and its artifact key before 0.2)
ARTIFACT_KEY = "nnseg_model"
#: what MLflow imports to load a registered model (``mlflow.pyfunc.load_model``): nnseg's own, installed code
LOADER_MODULE = "nnseg.deploy.pyfunc_model"


def is_model_uri(model: object) -> bool:
    """Whether ``model`` names a registered model (``models:/...``) rather than a path."""
    return isinstance(model, str) and model.strip().startswith("models:")


def download_model(uri: str, tracking_uri: str | None, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder of a registered model: a small work folder (``plans.json``, ``nnseg_model.json``,
    ``models/<configuration>/fold_<k>/checkpoint_final.pt``, and ``inference.json`` when it was registered with
    postprocessing), which :func:`nnseg.inference.model.open_model` opens like any work folder.

    ``uri`` is ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``. The model is downloaded once into
    ``cache_dir`` (default ``$XDG_CACHE_HOME/nnseg/registered`` or ``~/.cache/nnseg/registered``), keyed by
    MLflow's model id, and its checkpoints are checked against the SHA-256s recorded at registration.
    """
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise NnsegError(f"{uri!r}: not a registered model URI; use models:/NAME/VERSION or models:/NAME@ALIAS")
    store = registry_uri(tracking_uri, None)
    client = registry_client(store)
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise NnsegError(f"{uri}: {not_found(client, name, exc)} (registry {store})") from None
    key = found.model_id or f"{name}-{found.version}"
    cache = Path(cache_dir) if cache_dir is not None else cache_root()
    target = cache / re.sub(r"[^\w.\-]+", "_", key)
    if not Workspace(target).registered_manifest.is_file() or not intact(target):
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
            import mlflow.artifacts

            try:
                # the version's storage location, not models:/...: MLflow resolves models:/ URIs through its
                # process-wide registry URI, which nnseg never sets
                location = found.source
                if found.model_id and (not location or location.startswith("models:/")):
                    location = client.get_logged_model(found.model_id).artifact_location
                local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=store)
            except MlflowException as exc:
                raise NnsegError(f"{uri}: cannot download the model ({first_line(exc)})") from None
            source = artifact_folder(Path(local), ARTIFACT_KEY, uri)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(source), target)
        if not intact(target):
            raise NnsegError(f"{uri}: the downloaded checkpoints do not match the hashes recorded at registration")
    return target


def registry_uri(tracking_uri: str | None, work: Path | None) -> str:
    """The URI given, else the work folder's default store; an embedded store that does not exist is refused."""
    if tracking_uri is not None and not tracking_uri.strip():
        raise NnsegError("--tracking-uri is empty")
    uri = tracking_uri.strip() if tracking_uri else default_tracking_uri(work or DEFAULT_WORK_DIR)
    db = sqlite_path(uri)
    if work is None and tracking_uri is None and db is not None and not db.is_file():
        raise NnsegError(f"no MLflow store at {uri}; give --tracking-uri (an MLflow server or sqlite:///... file)")
    if not re.match(r"^[a-zA-Z][\w+.\-]*:", uri):
        raise NnsegError(f"tracking URI {uri!r}: expected e.g. http://127.0.0.1:5000 or sqlite:///path/mlflow.db")
    return uri


def registry_client(uri: str) -> Any:
    """An ``MlflowClient`` whose registry is the tracking store, after a quick reachability check."""
    from mlflow import MlflowClient

    if is_http(uri):
        probe_server(uri, "Default", 5.0)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def not_found(client: Any, name: str, exc: Exception) -> str:
    """What exists under ``name`` (versions and aliases), to say what to use instead."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        return f"no registered model named {name!r}; register one with nnseg register"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = sorted(registered.aliases or {})
    return f"{first_line(exc)}; {name!r} has version(s) {', '.join(map(str, versions)) or 'none'}" + (
        f" and alias(es) {', '.join(aliases)}" if aliases else ""
    )


def artifact_folder(local: Path, key: str, uri: str) -> Path:
    """The model folder inside a downloaded MLflow model: the pyfunc flavor's ``data`` (nnseg's loader module), or
    an artifact ``key`` of models registered by earlier nnseg versions. Only read, never executed."""
    from mlflow.models import Model

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise NnsegError(f"{uri}: not an MLflow model (no MLmodel file)")
    try:
        flavor = Model.load(str(mlmodel)).flavors["python_function"]
        relative = flavor["data"] if flavor.get("data") else flavor["artifacts"][key]["path"]
    except (KeyError, TypeError):
        raise NnsegError(
            f"{uri}: not an nnseg model (no model folder in it); register it with nnseg register"
        ) from None
    folder = (local / relative).resolve()
    if not folder.is_dir() or local.resolve() not in folder.parents:
        raise NnsegError(f"{uri}: the model's {key!r} artifact is missing")
    return folder


def intact(folder: Path) -> bool:
    """The model folder is as registered: its manifest matches its digest, and every file it lists (checkpoints,
    plan, labels, postprocessing) lies inside the folder with its recorded SHA-256."""
    try:
        data = json.loads(Workspace(folder).registered_manifest.read_text())
        if CONTENT_KEY in data and data[CONTENT_KEY] != content_sha256(data):  # registered before 0.2: none
            return False
        hashes = {**data["checkpoints_sha256"], **data.get("files_sha256", {})}
        return bool(data["checkpoints_sha256"]) and mismatched_file(folder, hashes) is None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def verify_model_folder(folder: Path, what: str) -> None:
    """NnsegError unless :func:`intact`: a registered model's files were changed after registration."""
    if not intact(folder):
        raise NnsegError(
            f"{what}: the model's files do not match the SHA-256s recorded at registration (changed or damaged); "
            "register the model again"
        )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nnseg" / "registered"


def register_logged_model(
    uri: str,
    experiment: str,
    name: str,
    *,
    alias: str | None,
    model_type: str,
    tags: dict[str, str],
    params: dict[str, str],
    save: Callable[[Path, Any], None],
    scratch: Path,
) -> tuple[str, str]:
    """Create an MLflow logged model in ``experiment``, fill it with what ``save(folder, mlflow_model)`` writes,
    and register it as a new version of ``name`` (and ``alias``); ``(name, version)``. A failure marks the logged
    model FAILED and is an NnsegError naming the store."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from nnseg.tracking.mlflow_tracker import MLflowTracker

    client = registry_client(uri)
    model_id = None
    try:
        experiment_id = MLflowTracker(uri, experiment).ensure_experiment()
        logged = client.create_logged_model(experiment_id, name=name, tags=tags, params=params, model_type=model_type)
        model_id = logged.model_id
        local = scratch / "mlflow_model"
        save(local, Model(artifact_path=logged.artifact_location, model_uuid=model_id, model_id=model_id))
        client.log_model_artifacts(model_id, str(local))
        client.finalize_logged_model(model_id, "READY")
        try:
            client.create_registered_model(name, tags={k: v for k, v in tags.items() if k != "nnseg.version"})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version_tags = {"nnseg.version": tags.get("nnseg.version", ""), "nnseg.logged_model_id": model_id}
        version = client.create_model_version(name, tags=version_tags, **_version_source(uri, logged))
        if alias is not None:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        if model_id is not None:
            _finalize_failed(client, model_id)
        raise NnsegError(f"cannot register {name!r} at {uri}: {first_line(exc)}") from None
    return name, str(version.version)


def _version_source(uri: str, logged: Any) -> dict[str, Any]:
    """Where a model version points: its logged model on a server; the logged model's storage location
    otherwise, since MLflow's local registry stores look a ``models:/<id>`` source (and the ``model_id``
    link) up through the process-wide tracking URI, which nnseg does not set (the tag
    ``nnseg.logged_model_id`` names the logged model instead)."""
    if is_http(uri):
        return {"source": f"models:/{logged.model_id}", "model_id": logged.model_id}
    return {"source": logged.artifact_location}


def _finalize_failed(client: Any, model_id: str) -> None:
    try:
        client.finalize_logged_model(model_id, "FAILED")
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


# -- shared --------------------------------------------------------------------------------------------
