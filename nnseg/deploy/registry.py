"""The MLflow model registry: a whole predictor (every fold) as one pyfunc model, and back to a local folder.

    name, version = register_model("work", "spleen", tracking_uri="http://127.0.0.1:5000")
    mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(table)   # needs nnseg installed
    folder = resolve_model_uri("models:/spleen@champion", "http://127.0.0.1:5000")  # for Predictor

The model is an MLflow *logged model* (in the experiment named after the dataset, tagged as model
development) holding a small work folder as its artifact (see :mod:`nnseg.deploy.pyfunc_model`), registered
as a new version of ``name``. Checkpoints are read with nnseg's safe loader (plain weights only); the only
pickle is MLflow's reference to the empty :class:`~nnseg.deploy.pyfunc_model.NnsegPyfuncModel` class.
No environment variable and no global MLflow setting is written: every call goes through an explicit
``MlflowClient`` or passes the tracking URI along.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnseg.checkpoint import Checkpoint
from nnseg.errors import NnsegError
from nnseg.version import __version__
from nnseg.workspace import DEFAULT_WORK_DIR, Workspace

#: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))/?$")
_NAME = re.compile(r"^[\w.\- ]+$")
MODEL_TYPE = "nnseg-predictor"


def register_model(
    model: str | os.PathLike,
    name: str,
    *,
    tracking_uri: str | None = None,
    configuration: str = "3d_fullres",
    folds: Sequence[int | str] | None = None,
    alias: str | None = None,
    experiment: str | None = None,
) -> tuple[str, str]:
    """Log ``model`` (every fold) as one MLflow pyfunc model and register it as a new version of ``name``.

    Args:
        model: a work folder (its ``models/<configuration>``), a ``models/<config>`` or ``fold_<k>`` folder,
            or a checkpoint file; only finished trainings (``checkpoint_final.pt``) are registered.
        name: registered model name (letters, digits, ``_ . -`` and spaces).
        tracking_uri: MLflow tracking/registry URI; None: the work folder's default store
            (``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<work>/mlflow.db``).
        configuration: which configuration of a work folder (ignored for the other kinds of ``model``).
        folds: which folds (default: every cross-validation fold found, else ``fold_all``).
        alias: also point this alias (e.g. ``champion``) at the new version.
        experiment: experiment holding the logged model (default: the plan's dataset name).

    Returns:
        ``(name, version)``.
    """
    from nnseg.inference.checkpoints import find_checkpoints, locate_model

    _check_name(name, "model name")
    if alias is not None:
        _check_name(alias, "alias")
    location, work = locate_model(Path(model), configuration)
    files = find_checkpoints(location, folds)
    checkpoints = _finished(files)
    uri = _tracking_uri(tracking_uri, work.root if work is not None else None)
    with tempfile.TemporaryDirectory(prefix="nnseg-register-") as tmp:
        root = Path(tmp) / "nnseg_model"
        manifest = _stage(root, files, checkpoints, work)
        return _log_and_register(
            Path(tmp), root, manifest, uri, name, alias, experiment or checkpoints[0].plan.dataset_name
        )


def resolve_model_uri(uri: str, tracking_uri: str | None, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local ``models/<configuration>`` folder (``fold_<k>/checkpoint_final.pt``) of a registered model.

    ``uri`` is ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``. The model is downloaded once into
    ``cache_dir`` (default ``$XDG_CACHE_HOME/nnseg/registered`` or ``~/.cache/nnseg/registered``), keyed by
    MLflow's model id, and its checkpoints are checked against the SHA-256s recorded at registration.
    The folder lies in a small work folder (``plans.json``, and ``inference.json`` when the model was
    registered with postprocessing), so ``Workspace.containing(folder)`` finds its postprocessing.
    """
    from mlflow.exceptions import MlflowException

    from nnseg.deploy.pyfunc_model import ARTIFACT_KEY, MANIFEST_FILE, model_folder

    match = _MODEL_URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise NnsegError(f"{uri!r}: not a registered model URI; use models:/NAME/VERSION or models:/NAME@ALIAS")
    store = _tracking_uri(tracking_uri, None)
    client = _client(store)
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise NnsegError(f"{uri}: {_not_found(client, name, exc)} (registry {store})") from None
    key = found.model_id or f"{name}-{found.version}"
    cache = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = cache / re.sub(r"[^\w.\-]+", "_", key)
    if not (target / MANIFEST_FILE).is_file() or not _intact(target):
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
                raise NnsegError(f"{uri}: cannot download the model ({_first_line(exc)})") from None
            source = _artifact_folder(Path(local), ARTIFACT_KEY, uri)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(source), target)
        if not _intact(target):
            raise NnsegError(f"{uri}: the downloaded checkpoints do not match the hashes recorded at registration")
    return model_folder(target)


# -- registration --------------------------------------------------------------------------------------


def _finished(files: list[Path]) -> list[Checkpoint]:
    checkpoints = [Checkpoint.load(f) for f in files]
    first = checkpoints[0]
    from nnseg.inference.checkpoints import require_single_stage

    require_single_stage(first, "a registered model")
    seen: set[str] = set()
    for path, checkpoint in zip(files, checkpoints):
        if not checkpoint.finished:
            raise NnsegError(
                f"{path}: not the checkpoint of a finished training; finish it (nnseg train resumes) "
                "and register its checkpoint_final.pt"
            )
        if checkpoint.configuration != first.configuration or checkpoint.plan != first.plan:
            raise NnsegError(f"{path}: trained with another plan/configuration than {files[0]}")
        if str(checkpoint.fold) in seen:
            raise NnsegError(f"{path}: fold {checkpoint.fold} is given twice")
        seen.add(str(checkpoint.fold))
    return checkpoints


def _stage(root: Path, files: list[Path], checkpoints: list[Checkpoint], work: Workspace | None) -> dict[str, Any]:
    """Write the model folder (a small work folder) under ``root``; its manifest."""
    from nnseg.deploy.pyfunc_model import LABELS_FILE, MANIFEST_FILE
    from nnseg.ensembling import chosen_postprocessing
    from nnseg.schema import to_jsonable
    from nnseg.tracking import file_sha256

    first = checkpoints[0]
    mini = Workspace(root)
    hashes = {}
    for path, checkpoint in zip(files, checkpoints):
        target = mini.fold_paths(first.configuration, checkpoint.fold).final
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
        hashes[target.relative_to(root).as_posix()] = file_sha256(target)
    mini.plans.write_text(json.dumps(to_jsonable(first.plan), indent=2))
    (root / LABELS_FILE).write_text(json.dumps(to_jsonable(first.plan.labels), indent=2))
    postprocessing = None
    # a broken inference.json fails here, not at predict time
    rule = None if work is None else chosen_postprocessing(work.root, first.configuration)
    if work is not None and rule is not None:
        shutil.copyfile(work.inference_choice, mini.inference_choice)
        postprocessing = rule.describe()
    manifest = {
        "nnseg_version": __version__,
        "configuration": first.configuration,
        "folds": [str(c.fold) for c in checkpoints],
        "dataset": first.plan.dataset_name,
        "channels": list(first.plan.channel_names),
        "labels": to_jsonable(first.plan.labels),
        "postprocessing": postprocessing,
        "checkpoints_sha256": hashes,
        "trained_with": sorted({c.nnseg_version for c in checkpoints}),
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def _log_and_register(
    tmp: Path, root: Path, manifest: dict[str, Any], uri: str, name: str, alias: str | None, experiment: str
) -> tuple[str, str]:
    import mlflow
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from nnseg.deploy.pyfunc_model import ARTIFACT_KEY, NnsegPyfuncModel
    from nnseg.tracking import MLflowTracker

    client = _client(uri)
    model_id = None
    try:
        experiment_id = MLflowTracker(uri, experiment).ensure_experiment()
        logged = client.create_logged_model(
            experiment_id,
            name=name,
            tags={"nnseg.version": manifest["nnseg_version"], "nnseg.dataset": manifest["dataset"]},
            params={
                "configuration": manifest["configuration"],
                "folds": ",".join(manifest["folds"]),
                "postprocessing": str(manifest["postprocessing"]),
            },
            model_type=MODEL_TYPE,
        )
        model_id = logged.model_id
        local = tmp / "mlflow_model"
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=NnsegPyfuncModel(),
            artifacts={ARTIFACT_KEY: str(root)},
            signature=_signature(),
            input_example=_input_example(),
            metadata={"nnseg": manifest},
            pip_requirements=_requirements(manifest["nnseg_version"]),
            mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=model_id, model_id=model_id),
        )
        client.log_model_artifacts(model_id, str(local))
        tags = {"nnseg.version": manifest["nnseg_version"], "nnseg.logged_model_id": model_id}
        client.finalize_logged_model(model_id, "READY")
        try:
            client.create_registered_model(name, tags={"nnseg.dataset": manifest["dataset"]})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, tags=tags, **_version_source(uri, logged))
        if alias is not None:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        if model_id is not None:
            _finalize_failed(client, model_id)
        raise NnsegError(f"cannot register {name!r} at {uri}: {_first_line(exc)}") from None
    return name, str(version.version)


def _version_source(uri: str, logged: Any) -> dict[str, Any]:
    """Where a model version points: its logged model on a server; the logged model's storage location
    otherwise, since MLflow's local registry stores look a ``models:/<id>`` source (and the ``model_id``
    link) up through the process-wide tracking URI, which nnseg does not set (the tag
    ``nnseg.logged_model_id`` names the logged model instead)."""
    from nnseg.tracking.uri import is_http

    if is_http(uri):
        return {"source": f"models:/{logged.model_id}", "model_id": logged.model_id}
    return {"source": logged.artifact_location}


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from nnseg.deploy.pyfunc_model import IMAGE_COLUMN, OUTPUT_COLUMN, STATUS_COLUMN

    return ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN), ColSpec("string", OUTPUT_COLUMN)]),
        outputs=Schema([ColSpec("string", OUTPUT_COLUMN), ColSpec("string", STATUS_COLUMN)]),
        params=ParamSchema(
            [
                ParamSpec("device", "string", "auto"),
                ParamSpec("postprocess", "boolean", True),
                ParamSpec("overwrite", "boolean", True),
            ]
        ),
    )


def _input_example() -> Any:
    import pandas as pd  # type: ignore[import-untyped]

    from nnseg.deploy.pyfunc_model import IMAGE_COLUMN, OUTPUT_COLUMN

    return pd.DataFrame(
        {IMAGE_COLUMN: ["/data/imagesTs/case_001_0000.nii.gz"], OUTPUT_COLUMN: ["/data/predictions/case_001.nii.gz"]}
    )


def _requirements(nnseg_version: str) -> list[str]:
    """Explicit requirements (MLflow's inference would load the model in a subprocess): nnseg pulls the rest."""
    import mlflow

    return [f"nnseg=={nnseg_version}", f"mlflow=={mlflow.__version__}"]


def _finalize_failed(client: Any, model_id: str) -> None:
    try:
        client.finalize_logged_model(model_id, "FAILED")
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


# -- shared --------------------------------------------------------------------------------------------


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value) or value != value.strip():
        raise NnsegError(f"{what} {value!r}: use letters, digits, '_', '.', '-' and inner spaces")


def _tracking_uri(tracking_uri: str | None, work: Path | None) -> str:
    """The URI given, else the work folder's default store; an embedded store that does not exist is refused."""
    from nnseg.tracking import default_tracking_uri
    from nnseg.tracking.uri import sqlite_path

    if tracking_uri is not None and not tracking_uri.strip():
        raise NnsegError("--tracking-uri is empty")
    uri = tracking_uri.strip() if tracking_uri else default_tracking_uri(work or DEFAULT_WORK_DIR)
    db = sqlite_path(uri)
    if work is None and tracking_uri is None and db is not None and not db.is_file():
        raise NnsegError(f"no MLflow store at {uri}; give --tracking-uri (an MLflow server or sqlite:///... file)")
    if not re.match(r"^[a-zA-Z][\w+.\-]*:", uri):
        raise NnsegError(f"tracking URI {uri!r}: expected e.g. http://127.0.0.1:5000 or sqlite:///path/mlflow.db")
    return uri


def _client(uri: str) -> Any:
    """An ``MlflowClient`` whose registry is the tracking store, after a quick reachability check."""
    from mlflow import MlflowClient

    from nnseg.tracking import probe_server
    from nnseg.tracking.uri import is_http, sqlite_path

    if is_http(uri):
        probe_server(uri, "Default", 5.0)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _not_found(client: Any, name: str, exc: Exception) -> str:
    """What exists under ``name`` (versions and aliases), to say what to use instead."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        return f"no registered model named {name!r}; register one with nnseg register"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = sorted(registered.aliases or {})
    return f"{_first_line(exc)}; {name!r} has version(s) {', '.join(map(str, versions)) or 'none'}" + (
        f" and alias(es) {', '.join(aliases)}" if aliases else ""
    )


def _artifact_folder(local: Path, key: str, uri: str) -> Path:
    """The pyfunc artifact ``key`` inside a downloaded MLflow model folder."""
    from mlflow.models import Model

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise NnsegError(f"{uri}: not an MLflow model (no MLmodel file)")
    try:
        relative = Model.load(str(mlmodel)).flavors["python_function"]["artifacts"][key]["path"]
    except (KeyError, TypeError):
        raise NnsegError(f"{uri}: not an nnseg model (no {key!r} artifact); register it with nnseg register") from None
    folder = (local / relative).resolve()
    if not folder.is_dir() or local.resolve() not in folder.parents:
        raise NnsegError(f"{uri}: the model's {key!r} artifact is missing")
    return folder


def _intact(folder: Path) -> bool:
    """Every checkpoint in the manifest exists with its recorded SHA-256."""
    from nnseg.deploy.pyfunc_model import MANIFEST_FILE
    from nnseg.tracking import file_sha256

    try:
        hashes = json.loads((folder / MANIFEST_FILE).read_text())["checkpoints_sha256"]
        return bool(hashes) and all(file_sha256(folder / rel) == digest for rel, digest in hashes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nnseg" / "registered"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


__all__ = ["MODEL_TYPE", "register_model", "resolve_model_uri"]
