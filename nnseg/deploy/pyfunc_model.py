"""The MLflow pyfunc face of an nnseg predictor (registered by :func:`nnseg.deploy.registry.register_model`).

Loading the model needs nnseg installed, and runs only its code: the MLmodel names this module as the pyfunc
``loader_module``; MLflow imports it and calls :func:`_load_pyfunc` with the model's data, a small work folder::

    data/nnseg_model/plans.json  labels.json  nnseg_model.json  [inference.json]
    data/nnseg_model/models/<configuration>/fold_<k>/checkpoint_final.pt

Nothing is unpickled: the folder's files are checked against the SHA-256s its manifest recorded at registration
(and the manifest against its own digest) before the checkpoints are read by nnseg's safe loader.

Input: a table with an ``image`` column (path of a case's image: one file, a 4D file, or the ``_0000`` file
of nnU-Net naming whose ``_0001``... siblings are read too) and an ``output`` column (the label map to
write; its ending picks the format). Output: the table of ``output`` paths and a ``status`` per row
(``ok`` or ``error: <why>``; a bad row does not stop the others).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from nnseg.errors import NnsegError
from nnseg.inference.model import Model, open_model
from nnseg.inference.predictor import Predictor
from nnseg.io import split_suffix

#: column names of the pyfunc model's input and output tables
IMAGE_COLUMN = "image"
OUTPUT_COLUMN = "output"
STATUS_COLUMN = "status"
STATUS_OK = "ok"


def _load_pyfunc(data_path: str) -> NnsegPyfuncModel:
    """MLflow's entry point (``loader_module``): the model folder at ``data_path``, opened (and so checked against
    its registration's hashes first, :func:`nnseg.inference.model.open_model`)."""
    return NnsegPyfuncModel(open_model(Path(data_path)))


class NnsegPyfuncModel:
    """Segments the images named in a table with an opened model; networks are built on the first prediction,
    per device."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._predictors: dict[str, Predictor] = {}

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Write one label map per row; a table of ``output`` and ``status``.

        ``params``: ``device`` (``auto``, ``cpu``, ``cuda:0``...), ``postprocess`` (apply the model's
        inference.json rule, default true), ``overwrite`` (default true).
        """
        params = dict(params or {})
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in (IMAGE_COLUMN, OUTPUT_COLUMN) if c not in frame.columns]
        if missing:
            raise NnsegError(
                f"nnseg model input: missing column(s) {missing}; give a table with columns "
                f"{IMAGE_COLUMN!r} (input image path) and {OUTPUT_COLUMN!r} (label map path to write)"
            )
        predictor = self._predictor(str(params.get("device") or "auto"), _flag(params.get("postprocess", True)))
        overwrite = _flag(params.get("overwrite", True))
        outputs, statuses = [], []
        for image, output in zip(frame[IMAGE_COLUMN], frame[OUTPUT_COLUMN]):
            outputs.append(str(output))
            try:
                statuses.append(_predict_row(predictor, image, output, overwrite))
            except (NnsegError, OSError, ValueError) as exc:
                statuses.append(f"error: {exc}")
        return pd.DataFrame({OUTPUT_COLUMN: outputs, STATUS_COLUMN: statuses})

    def _predictor(self, device: str, postprocess: bool) -> Predictor:
        if device not in self._predictors:
            self._predictors[device] = self._model.predictor(device=device)
        predictor = self._predictors[device]
        predictor.postprocess = self._model.postprocess() if postprocess else None
        return predictor


def _predict_row(predictor: Predictor, image: Any, output: Any, overwrite: bool) -> str:
    if not isinstance(image, str) or not image.strip():
        raise NnsegError(f"{IMAGE_COLUMN} must be a file path, got {image!r}")
    if not isinstance(output, str) or not output.strip():
        raise NnsegError(f"{OUTPUT_COLUMN} must be a file path, got {output!r}")
    target = Path(output)
    if target.exists() and not overwrite:
        return "skipped: exists"
    prediction = predictor.predict_files(channel_files(Path(image), len(predictor.plan.channel_names)))
    target.parent.mkdir(parents=True, exist_ok=True)
    predictor.write(prediction, target)
    return STATUS_OK


def channel_files(image: Path, channels: int) -> list[Path]:
    """``image``, or for a multi-channel model given nnU-Net's ``<case>_0000`` file, every channel's file."""

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
