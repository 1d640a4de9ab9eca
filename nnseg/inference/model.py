"""The one way to open a trained model: what ``-m`` means, for ``nnseg predict``, ``export``, ``register``, the
pyfunc model and the Python API alike.

    import nnseg
    predictor = nnseg.open_model("models:/spleen@champion", tracking_uri="http://127.0.0.1:5000").predictor()
    predictor.predict("case_0000.nii.gz", "case.nii.gz")      # postprocessing of the model included

A model is any of:

- a work folder (its ``models/<configuration>``; the configuration defaults to ``3d_fullres`` when trained, else
  the only trained one), a ``models/<configuration>`` folder, a ``fold_<k>`` folder or a checkpoint file;
- an export folder of ``nnseg export`` (``manifest.json``);
- a registered model, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``, downloaded once and checked against the
  hashes recorded at registration (:mod:`nnseg.tracking.registry`).

Postprocessing (find-best's ``inference.json``) applies when the model is a whole configuration of a work folder
(``-m WORK`` or ``-m WORK/models/<config>``), a registered model holding one, or an export that bundled one;
single folds and checkpoint files are taken as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnseg.distributed import DistributedContext, resolve_device
from nnseg.ensembling import chosen_postprocessing
from nnseg.errors import NnsegError
from nnseg.inference.checkpoints import CheckpointSource, find_checkpoints, load_checkpoints, locate_model
from nnseg.inference.exported import Manifest, is_export
from nnseg.inference.predictor import Predictor
from nnseg.labels import LabelScheme
from nnseg.planning.plan import Plan
from nnseg.postprocessing import PostprocessingRule
from nnseg.tracking.registry import download_model, is_model_uri, verify_model_folder
from nnseg.workspace import Workspace

#: the configuration a work folder opens when none is named and it is trained
DEFAULT_CONFIGURATION = "3d_fullres"


@dataclass(frozen=True)
class Model:
    """A trained model, opened: its checkpoints (loaded, safe loader) or its export, plan and postprocessing.

    Attributes:
        source: what was opened, as given (a path or a ``models:/`` URI).
        location: the local file or folder behind it (a registered model's downloaded folder).
        configuration: the plan's configuration the model predicts.
        plan: the plan (preprocessing, labels, network).
        checkpoints: one per fold, with their files; empty for an export.
        manifest: the export's manifest, or None.
        postprocessing: find-best's rule for this configuration, when it applies (see the module docstring).
        work: the work folder the model was opened from as a whole configuration, or None.
    """

    source: str
    location: Path
    configuration: str
    plan: Plan
    checkpoints: tuple[CheckpointSource, ...] = ()
    manifest: Manifest | None = None
    postprocessing: PostprocessingRule | None = None
    work: Path | None = None

    @property
    def scheme(self) -> LabelScheme:
        """Labels, objective and how probabilities become labels."""
        return self.plan.scheme

    @property
    def is_export(self) -> bool:
        return self.manifest is not None

    @property
    def folds(self) -> tuple[str, ...]:
        if self.manifest is not None:
            return tuple(str(f.fold) for f in self.manifest.folds)
        return tuple(str(source.checkpoint.fold) for source in self.checkpoints)

    def postprocess(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The postprocessing as a function of a label map, or None."""
        return None if self.postprocessing is None else self.postprocessing.apply

    def describe(self) -> list[str]:
        """One line per part the user should know of (the export, or each checkpoint)."""
        if self.manifest is not None:
            return [self.manifest.describe(self.location)]
        return [source.describe() for source in self.checkpoints]

    def predictor(
        self, *, postprocess: bool = True, context: DistributedContext | None = None, **settings: Any
    ) -> Predictor:
        """A :class:`Predictor` of this model; ``settings`` as :class:`Predictor` takes them (device, backend, tta,
        skip_air, step_size, window_batch, prune_level, ...). With ``postprocess`` (default), the predictor
        applies the model's postprocessing to every label map it returns or writes. Under torchrun
        (``context``), a CUDA device is each rank's own GPU."""
        if context is not None and context.enabled:
            settings["device"] = str(context.local_device(resolve_device(settings.get("device", "auto"))))
        if self.manifest is not None:
            predictor = Predictor.from_export(self.location, manifest=self.manifest, **settings)
        else:
            predictor = Predictor.from_sources(list(self.checkpoints), **settings)
        if postprocess:
            predictor.postprocess = self.postprocess()
        return predictor


def open_model(
    model: str | os.PathLike,
    configuration: str | None = None,
    folds: Sequence[int | str] | None = None,
    tracking_uri: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Model:
    """Open ``model`` (a path or a ``models:/`` URI; see the module docstring) for prediction, export or
    registration.

    Args:
        configuration: the configuration of a work folder (default ``3d_fullres`` when trained, else the only
            trained one); for any other kind of model, when given, it must be the model's own.
        folds: which folds (default: every cross-validation fold found; ``fold_all`` only when named or alone).
        tracking_uri: the MLflow registry of a ``models:/`` URI (default: the embedded store of ``./nnseg_work``).
        cache_dir: where registered models are downloaded (default ``~/.cache/nnseg/registered``).

    Raises:
        NnsegError: nothing usable there; the message names the path or URI and what to give instead.
    """
    source = str(model)
    if is_model_uri(model):  # checked against its registration's hashes by the download
        root = download_model(source.strip(), tracking_uri, cache_dir=cache_dir)
        return _open_checkpoints(source, root, _registered_configuration(root, configuration), folds)
    path = Path(model)
    if Workspace(path).registered_manifest.is_file():  # a registered model's folder, opened by its path
        verify_model_folder(path, source)
    if path.is_dir() and is_export(path):
        manifest = Manifest.load(path)
        _require_own(configuration, manifest.configuration, path)
        return Model(
            source,
            path,
            manifest.configuration,
            manifest.plan_object(),
            manifest=manifest.with_folds(folds, path),
            postprocessing=manifest.postprocessing_rule(),
        )
    return _open_checkpoints(source, path, configuration, folds)


def open_trained(
    model: str | os.PathLike, configuration: str | None, folds: Sequence[int | str] | None, *, command: str
) -> Model:
    """:func:`open_model` for what needs the trained checkpoints (``command``: export, register): a registered
    model or an export folder is refused, naming what to give instead."""
    if is_model_uri(model) or is_export(Path(model)):
        raise NnsegError(f"-m {model}: {command} takes trained checkpoints (a work folder, models/<config>, a fold)")
    return open_model(model, configuration, folds)


def _open_checkpoints(source: str, path: Path, configuration: str | None, folds: Sequence[int | str] | None) -> Model:
    """A work folder, ``models/<config>`` folder, fold folder or checkpoint file."""
    chosen = configuration or _default_configuration(path)
    location, work = locate_model(path, chosen or DEFAULT_CONFIGURATION)
    checkpoints = load_checkpoints(find_checkpoints(location, folds))
    first = checkpoints[0].checkpoint
    # the whole configuration of a work folder (-m WORK or WORK/models/<config>), whose find-best choice applies
    whole = work.root if work is not None and (work.root == path or work.models(path.name) == path) else None
    if configuration is not None and whole is None and first.configuration != configuration:
        raise NnsegError(f"-c {configuration}: {path} holds a {first.configuration} model; leave -c out")
    return Model(
        source,
        path,
        first.configuration,
        first.plan,
        checkpoints=tuple(checkpoints),
        postprocessing=None if whole is None else chosen_postprocessing(whole, first.configuration),
        work=whole,
    )


def _default_configuration(path: Path) -> str | None:
    """For a work folder: 3d_fullres when trained, else its only trained configuration; None for the other kinds
    (their checkpoints say)."""
    work = Workspace.containing(path)
    if work is None or work.root != path:
        return None
    trained = work.trained_configurations()
    if DEFAULT_CONFIGURATION in trained or len(trained) != 1:
        return DEFAULT_CONFIGURATION
    return trained[0]


def _registered_configuration(root: Path, configuration: str | None) -> str:
    """The one configuration a registered model's folder holds."""
    folders = Workspace(root).trained_configurations()
    if len(folders) != 1:
        raise NnsegError(f"{root}: not an nnseg model folder (expected one models/<configuration> folder)")
    _require_own(configuration, folders[0], root)
    return folders[0]


def _require_own(configuration: str | None, own: str, where: Path) -> None:
    if configuration is not None and configuration != own:
        raise NnsegError(f"-c {configuration}: {where} holds a {own} model; leave -c out or give -c {own}")
