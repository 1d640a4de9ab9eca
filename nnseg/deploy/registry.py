"""The MLflow model registry: a whole predictor (every fold) as one pyfunc model, and back to a local folder.

    name, version = register_model("work", "spleen", tracking_uri="http://127.0.0.1:5000")
    mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(table)   # needs nnseg installed
    nnseg.open_model("models:/spleen@champion", tracking_uri="http://127.0.0.1:5000").predictor()

The model is an MLflow *logged model* (in the experiment named after the dataset, tagged as model
development) holding a small work folder as its data (see :mod:`nnseg.deploy.pyfunc_model`), registered
as a new version of ``name``. Nothing is pickled: the MLmodel names nnseg's loader module
(:data:`nnseg.tracking.registry.LOADER_MODULE`), which MLflow imports from the installed nnseg; the folder's
manifest records the SHA-256 of every file (checkpoints, plan, labels, postprocessing) and a digest of itself,
checked before any use, and checkpoints are read with nnseg's safe loader (plain weights only).
No environment variable and no global MLflow setting is written: every call goes through an explicit
``MlflowClient`` or passes the tracking URI along.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnseg.digest import CONTENT_KEY, content_sha256, file_sha256
from nnseg.errors import NnsegError
from nnseg.inference.checkpoints import CheckpointSource, require_single_stage
from nnseg.inference.model import Model, open_trained
from nnseg.schema import to_jsonable, write_json_atomic
from nnseg.tracking.registry import ARTIFACT_KEY, LOADER_MODULE, register_logged_model, registry_uri
from nnseg.version import __version__
from nnseg.workspace import Workspace

_NAME = re.compile(r"^[\w.\- ]+$")
MODEL_TYPE = "nnseg-predictor"


def register_model(
    model: str | os.PathLike,
    name: str,
    *,
    tracking_uri: str | None = None,
    configuration: str | None = None,
    folds: Sequence[int | str] | None = None,
    alias: str | None = None,
    experiment: str | None = None,
) -> tuple[str, str]:
    """Log ``model`` (every fold) as one MLflow pyfunc model and register it as a new version of ``name``.

    Args:
        model: a work folder (its ``models/<configuration>``), a ``models/<config>`` or ``fold_<k>`` folder,
            or a checkpoint file (:func:`nnseg.inference.model.open_model`); only finished trainings
            (``checkpoint_final.pt``) are registered.
        name: registered model name (letters, digits, ``_ . -`` and spaces).
        tracking_uri: MLflow tracking/registry URI; None: the work folder's default store
            (``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<work>/mlflow.db``).
        configuration: which configuration of a work folder (default 3d_fullres when trained).
        folds: which folds (default: every cross-validation fold found, else ``fold_all``).
        alias: also point this alias (e.g. ``champion``) at the new version.
        experiment: experiment holding the logged model (default: the plan's dataset name).

    Returns:
        ``(name, version)``.
    """
    check_name(name, "model name")
    if alias is not None:
        check_name(alias, "alias")
    opened = open_trained(model, configuration, folds, command="register")
    _require_finished(opened.checkpoints)
    work = Workspace.containing(Path(model))
    uri = registry_uri(tracking_uri, work.root if work is not None else None)
    with tempfile.TemporaryDirectory(prefix="nnseg-register-") as tmp:
        root = Path(tmp) / ARTIFACT_KEY
        manifest = _stage(root, opened)
        return _log_and_register(Path(tmp), root, manifest, uri, name, alias, experiment or opened.plan.dataset_name)


# -- registration --------------------------------------------------------------------------------------


def _require_finished(sources: Sequence[CheckpointSource]) -> None:
    """Only finished trainings of a single-stage configuration, each fold once."""
    require_single_stage(sources[0].checkpoint, "a registered model")
    seen: set[str] = set()
    for source in sources:
        if not source.checkpoint.finished:
            raise NnsegError(
                f"{source.path}: not the checkpoint of a finished training; finish it (nnseg train resumes) "
                "and register its checkpoint_final.pt"
            )
        if str(source.checkpoint.fold) in seen:
            raise NnsegError(f"{source.path}: fold {source.checkpoint.fold} is given twice")
        seen.add(str(source.checkpoint.fold))


def _stage(root: Path, model: Model) -> dict[str, Any]:
    """Write the model folder (a small work folder) under ``root``; its manifest."""
    mini = Workspace(root)
    hashes = {}
    for source in model.checkpoints:
        target = mini.fold_paths(model.configuration, source.checkpoint.fold).final
        target.parent.mkdir(parents=True)
        shutil.copyfile(source.path, target)
        hashes[target.relative_to(root).as_posix()] = file_sha256(target)
    model.plan.save(mini.plans)
    write_json_atomic(mini.registered_labels, to_jsonable(model.plan.labels))
    postprocessing = None
    if model.work is not None and model.postprocessing is not None:
        shutil.copyfile(Workspace(model.work).inference_choice, mini.inference_choice)
        postprocessing = model.postprocessing.describe()
    files = [mini.plans, mini.registered_labels, mini.inference_choice]
    manifest: dict[str, Any] = {
        "nnseg_version": __version__,
        "configuration": model.configuration,
        "folds": list(model.folds),
        "dataset": model.plan.dataset_name,
        "channels": list(model.plan.channel_names),
        "labels": to_jsonable(model.plan.labels),
        "postprocessing": postprocessing,
        "checkpoints_sha256": hashes,
        "files_sha256": {p.relative_to(root).as_posix(): file_sha256(p) for p in files if p.is_file()},
        "trained_with": sorted({s.checkpoint.nnseg_version for s in model.checkpoints}),
    }
    manifest[CONTENT_KEY] = content_sha256(manifest)
    write_json_atomic(mini.registered_manifest, manifest)
    return manifest


def _log_and_register(
    tmp: Path, root: Path, manifest: dict[str, Any], uri: str, name: str, alias: str | None, experiment: str
) -> tuple[str, str]:
    """Save ``root`` as a pyfunc model with nnseg's loader module and register it (:func:`register_logged_model`)."""
    import mlflow.pyfunc

    def save(local: Path, mlflow_model: Any) -> None:
        # no pickle: MLmodel names nnseg's loader module, which MLflow imports from the installed nnseg; the model
        # folder is plain data (checkpoints read by nnseg's safe loader after their hashes are checked)
        mlflow.pyfunc.save_model(
            path=str(local),
            loader_module=LOADER_MODULE,
            data_path=str(root),
            signature=_signature(),
            input_example=_input_example(),
            metadata={"nnseg": manifest},
            pip_requirements=_requirements(manifest["nnseg_version"]),
            mlflow_model=mlflow_model,
        )

    return register_logged_model(
        uri,
        experiment,
        name,
        alias=alias,
        model_type=MODEL_TYPE,
        tags={"nnseg.version": manifest["nnseg_version"], "nnseg.dataset": manifest["dataset"]},
        params={
            "configuration": manifest["configuration"],
            "folds": ",".join(manifest["folds"]),
            "postprocessing": str(manifest["postprocessing"]),
        },
        save=save,
        scratch=tmp,
    )


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


def check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value) or value != value.strip():
        raise NnsegError(f"{what} {value!r}: use letters, digits, '_', '.', '-' and inner spaces")


__all__ = ["MODEL_TYPE", "register_model"]
