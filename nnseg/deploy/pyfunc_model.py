"""The MLflow pyfunc face of an nnseg predictor (registered by :func:`nnseg.deploy.registry.register_model`).

Loading the model needs nnseg installed: MLflow stores only a reference to :class:`NnsegPyfuncModel`
(an empty object, pickled by MLflow); everything real is in the model's artifacts, a small work folder::

    nnseg_model/plans.json  labels.json  nnseg_model.json  [inference.json]
    nnseg_model/models/<configuration>/fold_<k>/checkpoint_final.pt

Input: a table with an ``image`` column (path of a case's image: one file, a 4D file, or the ``_0000`` file
of nnU-Net naming whose ``_0001``... siblings are read too) and an ``output`` column (the label map to
write; its ending picks the format). Output: the table of ``output`` paths and a ``status`` per row
(``ok`` or ``error: <why>``; a bad row does not stop the others).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from mlflow.pyfunc import PythonModel

#: column names of the pyfunc model's input and output tables
IMAGE_COLUMN = "image"
OUTPUT_COLUMN = "output"
STATUS_COLUMN = "status"
STATUS_OK = "ok"
#: the artifact key (and folder name) of the model folder
ARTIFACT_KEY = "nnseg_model"
#: the manifest in the model folder: configuration, folds, nnseg version, checkpoint hashes
MANIFEST_FILE = "nnseg_model.json"
LABELS_FILE = "labels.json"


class NnsegPyfuncModel(PythonModel):
    """Segments the images named in a table; holds no data (MLflow pickles it), the weights are artifacts."""

    def load_context(self, context: Any) -> None:
        """Remember the model folder; the networks are built on the first prediction (per device)."""
        self._root = Path(context.artifacts[ARTIFACT_KEY])
        self._predictors: dict[str, Any] = {}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Write one label map per row; a table of ``output`` and ``status``.

        ``params``: ``device`` (``auto``, ``cpu``, ``cuda:0``...), ``postprocess`` (apply the model's
        inference.json rule, default true), ``overwrite`` (default true).
        """
        from nnseg.errors import NnsegError

        params = dict(params or {})
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in (IMAGE_COLUMN, OUTPUT_COLUMN) if c not in frame.columns]
        if missing:
            raise NnsegError(
                f"nnseg model input: missing column(s) {missing}; give a table with columns "
                f"{IMAGE_COLUMN!r} (input image path) and {OUTPUT_COLUMN!r} (label map path to write)"
            )
        predictor = self._predictor(str(params.get("device") or "auto"))
        postprocess = self._postprocessing(predictor) if _flag(params.get("postprocess", True)) else None
        overwrite = _flag(params.get("overwrite", True))
        outputs, statuses = [], []
        for image, output in zip(frame[IMAGE_COLUMN], frame[OUTPUT_COLUMN]):
            outputs.append(str(output))
            try:
                statuses.append(_predict_row(predictor, image, output, postprocess, overwrite))
            except (NnsegError, OSError, ValueError) as exc:
                statuses.append(f"error: {exc}")
        return pd.DataFrame({OUTPUT_COLUMN: outputs, STATUS_COLUMN: statuses})

    def _predictor(self, device: str) -> Any:
        from nnseg.inference.predictor import Predictor

        if device not in self._predictors:
            self._predictors[device] = Predictor.from_checkpoints(model_folder(self._root), device=device)
        return self._predictors[device]

    def _postprocessing(self, predictor: Any) -> Any:
        from nnseg.ensembling import chosen_postprocessing

        rule = chosen_postprocessing(self._root, model_folder(self._root).name)
        return None if rule is None else rule.apply


def model_folder(root: Path) -> Path:
    """The ``models/<configuration>`` folder (holding ``fold_*``) of a model folder."""
    from nnseg.errors import NnsegError
    from nnseg.workspace import Workspace

    folders = sorted(p for p in Workspace(root).models_root.glob("*") if p.is_dir())
    if len(folders) != 1:
        raise NnsegError(f"{root}: not an nnseg model folder (expected one models/<configuration> folder)")
    return folders[0]


def _predict_row(predictor: Any, image: Any, output: Any, postprocess: Any, overwrite: bool) -> str:
    from dataclasses import replace

    from nnseg.errors import NnsegError

    if not isinstance(image, str) or not image.strip():
        raise NnsegError(f"{IMAGE_COLUMN} must be a file path, got {image!r}")
    if not isinstance(output, str) or not output.strip():
        raise NnsegError(f"{OUTPUT_COLUMN} must be a file path, got {output!r}")
    target = Path(output)
    if target.exists() and not overwrite:
        return "skipped: exists"
    prediction = predictor.predict_files(channel_files(Path(image), len(predictor.plan.channel_names)))
    if postprocess is not None:
        prediction = replace(prediction, labels=postprocess(prediction.labels))
    target.parent.mkdir(parents=True, exist_ok=True)
    predictor.write(prediction, target)
    return STATUS_OK


def channel_files(image: Path, channels: int) -> list[Path]:
    """``image``, or for a multi-channel model given nnU-Net's ``<case>_0000`` file, every channel's file."""
    from nnseg.errors import NnsegError
    from nnseg.io import split_suffix

    if not image.exists():
        raise NnsegError(f"{image}: input image not found")
    if channels == 1 or image.is_dir():
        return [image]
    stem, ending = split_suffix(image)
    if not stem.endswith("_0000"):
        return [image]  # a 4D file holding every channel
    files = [image.with_name(f"{stem[:-4]}{c:04d}{ending}") for c in range(channels)]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise NnsegError(f"{image}: the model needs {channels} channels; not found beside it: {', '.join(absent)}")
    return files


def _flag(value: Any) -> bool:
    """A boolean param given as a bool or a string (``true``/``false``)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)
