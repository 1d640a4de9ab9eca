"""Export folders of ``nnseg export`` as inference reads them: ``manifest.json`` (:class:`Manifest`) and one window
runner per fold. Writing them is :mod:`nnseg.deploy.export`'s.

An export folder holds, per fold, the network in eval mode without deep-supervision heads, for windows
``(N, channels, *patch)`` (N dynamic): ``fold_<k>.onnx``, ``fold_<k>.xml`` + ``.bin`` or ``fold_<k>.pt``; and
``manifest.json``: nnseg version, format, precision, configuration, the plan (preprocessing and labels, so
prediction needs no checkpoint), the postprocessing of ``inference.json`` when the work folder had one, each fold's
weights sha256 (:func:`nnseg.inference.backends.weights_sha256`) and the parity figures of the export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nnseg.errors import NnsegError
from nnseg.inference import backends
from nnseg.inference.config import EXPORT_FORMATS, EXPORT_PRECISIONS, EXPORT_RUNTIMES
from nnseg.planning.plan import Plan
from nnseg.postprocessing import PostprocessingRule
from nnseg.schema import SchemaError, load_dataclass, read_json, write_json_atomic

#: the OpenVINO inference precision hint of each export precision (int8 layers run in int8 whatever the hint)
OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FoldExport:
    """One exported fold: its file(s), where its weights came from, how close it is to PyTorch.

    Attributes:
        parity: ``{"tolerance": t, "random": {"patches": n, ...}, "real": {"cases": [...], ...}}``, each set
            with ``max_abs_diff``, ``logit_scale`` (max(1, max |logit|)), ``relative_diff`` (their ratio, must be
            <= ``t``) and ``label_agreement`` (>= :data:`MIN_LABEL_AGREEMENT`). ``real`` is None without
            preprocessed training cases; of the fp32 graph for an int8 export.
        quantization: int8 exports: calibration set and Dice figures (:mod:`nnseg.deploy.quantize`), else None.
    """

    fold: int | str
    file: str
    checkpoint: str
    weights_sha256: str
    parity: dict[str, Any]
    quantization: dict[str, Any] | None = None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of an export folder (see the module docstring)."""

    manifest_version: int
    nnseg_version: str
    format: str
    precision: str
    configuration: str
    input_shape: tuple[int | str, ...]
    plan: dict[str, Any]
    labels: dict[str, Any]
    postprocessing: dict[str, Any] | None
    folds: tuple[FoldExport, ...]

    @property
    def runtime(self) -> str:
        return EXPORT_RUNTIMES[self.format]

    def plan_object(self) -> Plan:
        plan = load_dataclass(Plan, self.plan, "plan")
        plan.validate()
        return plan

    def postprocessing_rule(self) -> Any:
        """The :class:`~nnseg.postprocessing.PostprocessingRule` exported with the model, or None."""
        return None if self.postprocessing is None else PostprocessingRule.from_dict(self.postprocessing)

    def with_folds(self, folds: Sequence[int | str] | None, folder: Path) -> Manifest:
        """This manifest with only ``folds`` (all when None or empty); NnsegError naming a fold it lacks."""
        if not folds:
            return self
        by_name = {str(f.fold): f for f in self.folds}
        missing = [str(f) for f in folds if str(f) not in by_name]
        if missing:
            raise NnsegError(
                f"-f {' '.join(missing)}: not in the export {folder} (it holds fold(s) {', '.join(by_name)})"
            )
        return replace(self, folds=tuple(by_name[str(f)] for f in folds))

    def describe(self, folder: Path) -> str:
        folds = ", ".join(str(f.fold) for f in self.folds)
        return f"{self.configuration} {self.format} export {folder} (fold(s) {folds}, {self.precision})"

    def save(self, folder: Path) -> Path:
        return write_json_atomic(folder / MANIFEST, asdict(self))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Manifest:
        path = Path(folder) / MANIFEST
        data = read_json(path, "export manifest (written by nnseg export)")
        try:
            manifest = load_dataclass(cls, data, "manifest")
            if manifest.format not in EXPORT_FORMATS:
                raise SchemaError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {manifest.format!r}")
            if manifest.precision not in EXPORT_PRECISIONS:
                raise SchemaError(
                    f"precision: expected one of {', '.join(EXPORT_PRECISIONS)}, got {manifest.precision!r}"
                )
            manifest.plan_object().configuration(manifest.configuration)
        except (NnsegError, ValueError, TypeError) as exc:
            raise NnsegError(f"{path}: damaged export manifest ({exc}); export the model again") from None
        return manifest


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an export folder (holds ``manifest.json``)."""
    return (Path(path) / MANIFEST).is_file()


def load_export(
    folder: str | os.PathLike,
    *,
    folds: Sequence[int | str] | None = None,
    device: torch.device | None = None,
    manifest: Manifest | None = None,
) -> tuple[Manifest, list[backends.WindowRunner]]:
    """The manifest (restricted to ``folds``) and one runner per fold of an export folder; ``manifest``: the
    folder's manifest already read."""
    folder = Path(folder)
    manifest = (manifest or Manifest.load(folder)).with_folds(folds, folder)
    runners = []
    for entry in manifest.folds:
        path = folder / entry.file
        if not path.is_file():
            raise NnsegError(f"{path}: missing from the export; export the model again")
        runners.append(export_runner(manifest.format, path, manifest.precision, device or torch.device("cpu")))
    return manifest, runners


def export_runner(format: str, path: Path, precision: str, device: torch.device | None = None) -> backends.WindowRunner:
    if format == "onnx":
        return backends.OnnxRuntimeRunner(path)
    if format == "openvino":
        return backends.OpenVinoRunner(path, precision=OPENVINO_HINTS[precision])
    return backends.load_torchscript(path, device or torch.device("cpu"))
