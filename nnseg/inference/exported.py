"""Export folders of ``nnseg export`` as inference reads them: ``manifest.json`` (:class:`Manifest`) and one window
runner per fold. Writing them is :mod:`nnseg.deploy.export`'s.

An export folder holds, per fold, the network in eval mode without deep-supervision heads, for windows
``(N, channels, *patch)`` (N dynamic): ``fold_<k>.onnx`` or ``fold_<k>.xml`` + ``.bin``; and
``manifest.json``: nnseg version, format, precision, configuration, the plan (preprocessing and labels, so
prediction needs no checkpoint), the postprocessing of ``inference.json`` when the work folder had one, each fold's
weights sha256 (:func:`nnseg.inference.backends.weights_sha256`) and the parity figures of the export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nnseg.digest import CONTENT_KEY, content_sha256, mismatched_file
from nnseg.errors import NnsegError, first_line
from nnseg.inference import backends
from nnseg.inference.config import EXPORT_FORMATS, EXPORT_PRECISIONS, EXPORT_RUNTIMES
from nnseg.planning.plan import Plan
from nnseg.postprocessing import PostprocessingRule
from nnseg.schema import SchemaError, load_dataclass, read_json, write_json_atomic

#: the OpenVINO inference precision hint of each export precision (int8 layers run in int8 whatever the hint)
OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
MANIFEST = "manifest.json"
#: 2: every file's SHA-256 (``files_sha256``) and a digest of the manifest's content (``content_sha256``)
MANIFEST_VERSION = 2


@dataclass(frozen=True)
class FoldExport:
    """One exported fold: its file(s), where its weights came from, how close it is to PyTorch.

    Attributes:
        parity: ``{"tolerance": t, "random": {"patches": n, ...}, "real": {"cases": [...], ...}}``, each set
            with ``max_abs_diff``, ``logit_scale`` (max(1, max |logit|)), ``relative_diff`` (their ratio, must be
            <= ``t``) and ``label_agreement`` (>= :data:`MIN_LABEL_AGREEMENT`). ``real`` is None without
            preprocessed training cases; of the fp32 graph for an int8 export.
        quantization: int8 exports: calibration set and Dice figures (:mod:`nnseg.deploy.quantize`), else None.
        files_sha256: every file of the fold (``file`` and, for OpenVINO, its ``.bin``), name -> SHA-256; checked
            before the fold is loaded.
    """

    fold: int | str
    file: str
    checkpoint: str
    weights_sha256: str
    parity: dict[str, Any]
    quantization: dict[str, Any] | None = None
    files_sha256: dict[str, str] = field(default_factory=dict)


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
    #: digest of everything above (:func:`nnseg.digest.json_sha256`), written by :meth:`save`
    content_sha256: str = ""

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
        """Write ``manifest.json`` with the digest of its content."""
        data = asdict(self)
        data[CONTENT_KEY] = content_sha256(data)
        return write_json_atomic(folder / MANIFEST, data)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Manifest:
        """Read and check ``manifest.json``: its version, the digest of its content, its plan and labels; every
        problem is an NnsegError naming the file and saying to export again."""
        path = Path(folder) / MANIFEST
        data = read_json(path, "export manifest (written by nnseg export)")
        fix = "export the model again (nnseg export)"
        version = data.get("manifest_version") if isinstance(data, dict) else None
        if version != MANIFEST_VERSION:
            raise NnsegError(
                f"{path}: manifest version {version!r}, this nnseg reads version {MANIFEST_VERSION} (with the "
                f"hashes of every file); {fix}"
            )
        if data.get(CONTENT_KEY) != content_sha256(data):
            raise NnsegError(f"{path}: its content does not match its digest (edited or damaged); {fix}")
        try:
            manifest = load_dataclass(cls, data, "manifest")
            if manifest.format not in EXPORT_FORMATS:
                raise SchemaError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {manifest.format!r}")
            if manifest.precision not in EXPORT_PRECISIONS:
                raise SchemaError(
                    f"precision: expected one of {', '.join(EXPORT_PRECISIONS)}, got {manifest.precision!r}"
                )
            manifest.plan_object().configuration(manifest.configuration)
            if manifest.labels != manifest.plan.get("labels"):
                raise SchemaError("labels: differ from the plan's labels")
            for entry in manifest.folds:
                for name in (entry.file, *entry.files_sha256):
                    if not name or Path(name).name != name or name in (".", ".."):
                        raise SchemaError(f"fold {entry.fold}: file {name!r} is not a file of the export folder")
                if entry.file not in entry.files_sha256:
                    raise SchemaError(f"fold {entry.fold}: no SHA-256 recorded for {entry.file}")
        except (NnsegError, ValueError, TypeError) as exc:
            raise NnsegError(f"{path}: damaged export manifest ({exc}); {fix}") from None
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
        verify_files(folder, entry.files_sha256)
        path = folder / entry.file
        try:
            runners.append(export_runner(manifest.format, path, manifest.precision, device or torch.device("cpu")))
        except NnsegError:
            raise
        except Exception as exc:  # noqa: BLE001 - each runtime has its own errors for a file it cannot read
            raise NnsegError(
                f"{path}: {EXPORT_RUNTIMES[manifest.format]} cannot read it ({first_line(exc)}); export the model again"
            ) from None
    return manifest, runners


def verify_files(folder: Path, hashes: dict[str, str]) -> None:
    """Every file of ``hashes`` lies in ``folder`` (no link out of it) with its recorded SHA-256; NnsegError
    naming the first that does not."""
    found = mismatched_file(folder, hashes)
    if found is None:
        return
    path, why = found
    problem = {
        "missing": "missing from the export",
        "outside": f"points outside the export folder {folder}",
        "changed": f"does not match the SHA-256 recorded in {MANIFEST} (replaced or damaged)",
    }[why]
    raise NnsegError(f"{path}: {problem}; export the model again")


def export_runner(format: str, path: Path, precision: str, device: torch.device | None = None) -> backends.WindowRunner:
    if format == "onnx":
        return backends.OnnxRuntimeRunner(path)
    if format == "openvino":
        return backends.OpenVinoRunner(path, precision=OPENVINO_HINTS[precision])
    raise NnsegError(f"{path}: {format} exports are no longer read; export the model again as onnx or openvino")
