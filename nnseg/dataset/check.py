"""``nnseg check``: verify a dataset and list every problem, never only the first.

Reads each case's files once (in worker processes, one case per worker at a time) and
compares channels, label and dataset.json. Only reads: nothing is written to the dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnseg.dataset.problems import Problem
from nnseg.dataset.spec import Case, Dataset, load_dataset
from nnseg.errors import DatasetError, ImageReadError
from nnseg.io import Volume, read_volume
from nnseg.parallel import parallel_map
from nnseg.progress import progress

#: Affine agreement demanded between a case's channels and its label map.
GEOMETRY_ATOL_MM = 1e-3
GEOMETRY_RTOL = 1e-4


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        dataset: the dataset folder.
        num_cases: training cases found.
        problems: every problem found, dataset-level first, then per case in case order.
    """

    dataset: str
    num_cases: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "num_cases": self.num_cases,
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """Human-readable report: one line per problem, then a verdict."""
        lines = [str(p) for p in self.problems]
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"{verdict}: {self.dataset}: {self.num_cases} case(s), "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        """Raise a DatasetError listing every error (used by stages that need a clean dataset)."""
        if not self.ok:
            listed = "\n".join(f"  {p}" for p in self.errors)
            raise DatasetError(
                f"{self.dataset}: dataset failed the integrity check:\n{listed}\n"
                f"run `nnseg check {self.dataset}` for the full report"
            )


def check_dataset(dataset: Dataset | str | os.PathLike, *, workers: int = 1, show_progress: bool = True) -> CheckReport:
    """Verify a dataset's files against each other and against dataset.json.

    Args:
        dataset: a loaded :class:`Dataset` or its folder.
        workers: processes reading cases in parallel (memory grows with one case per worker).
        show_progress: draw a progress bar on stderr.

    Returns:
        A report with every problem found; ``report.ok`` is False when any is an error.
        A malformed dataset.json is reported as an error, not raised.
    """
    if not isinstance(dataset, Dataset):
        root = Path(dataset)
        try:
            dataset = load_dataset(root)
        except DatasetError as exc:
            where = root / "dataset.json" if (root / "dataset.json").is_file() else root
            message = _strip_path(str(exc), where.resolve())
            file = "dataset.json" if where != root else str(root)
            return CheckReport(str(root), 0, [Problem("error", "dataset_json", file, message)])
    report = CheckReport(str(dataset.root), len(dataset.cases), list(dataset.problems))
    report.problems += _dataset_level_problems(dataset)
    tasks = [(dataset, case) for case in dataset.cases] + [(dataset, case) for case in dataset.test_cases]
    for problems in progress(
        parallel_map(_check_case_task, tasks, workers=workers),
        total=len(tasks),
        desc="check",
        unit="case",
        enabled=show_progress,
    ):
        report.problems += problems
    return report


def _dataset_level_problems(dataset: Dataset) -> list[Problem]:
    problems = []
    if not dataset.cases:
        problems.append(
            Problem(
                "error",
                "empty_dataset",
                "imagesTr" if dataset.layout == "nnunet" else "dataset.json",
                "no training cases found",
            )
        )
    if dataset.num_training is None:
        problems.append(Problem("warning", "num_training", "dataset.json", "numTraining is not declared"))
    elif dataset.num_training != len(dataset.cases):
        problems.append(
            Problem(
                "error",
                "num_training",
                "dataset.json",
                f"numTraining is {dataset.num_training} but {len(dataset.cases)} training case(s) were found",
            )
        )
    return problems


def _check_case_task(task: tuple[Dataset, Case]) -> list[Problem]:
    dataset, case = task
    return check_case(dataset, case)


def check_case(dataset: Dataset, case: Case) -> list[Problem]:
    """Every problem of one case: files present and readable, geometry consistent, values valid."""
    problems: list[Problem] = []

    def add(severity: str, kind: str, path: Path, message: str) -> None:
        problems.append(Problem(severity, kind, dataset.relative(path), message, case.case_id))  # type: ignore[arg-type]

    missing = case.missing_images
    label_missing = case.label_file is not None and not case.label_file.is_file()
    if len(missing) == len(case.image_files) and case.label_file is not None and not label_missing:
        add(
            "error",
            "label_without_image",
            case.label_file,
            f"label has no image: expected {', '.join(dataset.relative(p) for p in missing)}",
        )
        return problems
    if case.channels_in_one_file and missing:
        add("error", "missing_image", missing[0], "image file does not exist")
    else:
        for path in missing:
            add(
                "error",
                "missing_channel",
                path,
                f"channel file is missing (dataset.json declares {dataset.num_channels} channel(s): "
                f"{', '.join(dataset.channel_names)})",
            )
    if label_missing and case.label_file is not None:
        add(
            "error",
            "missing_label",
            case.label_file,
            f"label file is missing for case {case.case_id} (its image exists)",
        )

    channels = list(_read_channels(dataset, case, add))
    reference = channels[0] if channels else None
    for path, volume in channels[1:]:
        if reference is not None and volume.geometry.shape != reference[1].geometry.shape:
            add(
                "error",
                "shape_mismatch",
                path,
                f"shape {volume.geometry.shape} differs from {dataset.relative(reference[0])} "
                f"{reference[1].geometry.shape}",
            )
        elif reference is not None and not _geometry_close(volume, reference[1]):
            add(
                "error",
                "geometry_mismatch",
                path,
                f"geometry differs from {dataset.relative(reference[0])}: "
                f"{volume.geometry.describe()} vs {reference[1].geometry.describe()}",
            )
    if case.label_file is not None and not label_missing:
        problems += _check_label(dataset, case, reference)
    return problems


def _read_channels(dataset: Dataset, case: Case, add) -> Iterable[tuple[Path, Volume]]:
    """Yield (path, 3D volume) per channel that could be read; report the rest."""
    for path in case.image_files:
        if not (path.is_file() or path.is_dir()):
            continue
        try:
            volume = read_volume(path)
        except ImageReadError as exc:
            add("error", "unreadable", path, _strip_path(str(exc), path))
            continue
        arrays = _split_channels(volume, dataset, case, path, add)
        for array in arrays:
            if _check_finite(array, path, add):
                _check_not_constant(array, path, add)
            yield path, Volume(array, volume.geometry)


def _split_channels(volume: Volume, dataset: Dataset, case: Case, path: Path, add) -> list[np.ndarray]:
    array = volume.array
    if array.ndim == 3:
        expected = dataset.num_channels if case.channels_in_one_file else 1
        if expected != 1:
            add(
                "error",
                "channel_count",
                path,
                f"image is 3D (one channel) but dataset.json declares {expected} channels",
            )
        return [array]
    if not case.channels_in_one_file:
        add(
            "error",
            "dimensionality",
            path,
            f"image is 4D (shape {tuple(reversed(array.shape))}); in the nnU-Net layout each channel is its own "
            "3D file <case>_<XXXX>",
        )
        return []
    if array.shape[0] != dataset.num_channels:
        add(
            "error",
            "channel_count",
            path,
            f"image holds {array.shape[0]} channels but dataset.json declares {dataset.num_channels}",
        )
    return [array[c] for c in range(array.shape[0])]


def _check_finite(array: np.ndarray, path: Path, add) -> bool:
    """Report NaN/Inf voxels; True when every voxel is finite."""
    if not np.issubdtype(array.dtype, np.floating):
        return True
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    if n_nan or n_inf:
        add(
            "error",
            "non_finite",
            path,
            f"image contains {n_nan} NaN and {n_inf} infinite voxel(s); replace them (e.g. with the background value)",
        )
    return not (n_nan or n_inf)


def _check_not_constant(array: np.ndarray, path: Path, add) -> None:
    if array.size and array.min() == array.max():
        add(
            "warning",
            "constant_image",
            path,
            f"constant image (every voxel is {array.flat[0]:g}) carries no information; check the file (an export "
            "that failed?) or remove the case",
        )


def _check_label(dataset: Dataset, case: Case, reference: tuple[Path, Volume] | None) -> list[Problem]:
    problems: list[Problem] = []
    path = case.label_file
    if path is None:
        return problems

    def add(severity: str, kind: str, message: str) -> None:
        problems.append(Problem(severity, kind, dataset.relative(path), message, case.case_id))  # type: ignore[arg-type]

    try:
        volume = read_volume(path)
    except ImageReadError as exc:
        add("error", "unreadable", _strip_path(str(exc), path))
        return problems
    labels = volume.array
    if labels.ndim != 3:
        add("error", "dimensionality", f"label map must be 3D, got shape {tuple(reversed(labels.shape))}")
        return problems
    if np.issubdtype(labels.dtype, np.floating):
        finite = np.isfinite(labels)
        if not finite.all():
            add("error", "non_finite", f"label map contains {int((~finite).sum())} NaN/infinite voxel(s)")
            labels = np.where(finite, labels, 0)
        fractional = labels != np.round(labels)
        if fractional.any():
            example = float(labels[fractional].flat[0])
            add(
                "error",
                "non_integer_label",
                f"label map holds non-integer values (e.g. {example:g}) in {int(fractional.sum())} voxel(s); "
                "labels must be whole numbers (was it resampled with interpolation?)",
            )
            labels = np.round(labels)
    values = set(np.unique(labels).astype(np.int64).tolist())
    declared = set(dataset.label_values)
    undeclared = sorted(values - declared)
    if undeclared:
        hint = ""
        if 255 in undeclared and values <= {0, 255}:
            hint = "; it looks like a binary mask saved as 0/255: store the foreground as 1"
        add(
            "error",
            "undeclared_label",
            f"label values {undeclared} are not declared in dataset.json labels (declared: {sorted(declared)}){hint}",
        )
    ignore = dataset.labels.ignore_value
    if values <= {0}:
        add("warning", "empty_label", "label map is empty (background only)")
    elif ignore is not None and values == {ignore}:
        add(
            "warning",
            "all_ignore",
            f"every voxel is the ignore label ({ignore}): the case teaches nothing; annotate part of it or drop it",
        )
    scheme = dataset.labels
    if scheme.has_regions and not undeclared and not scheme.problems():
        lost = scheme.check_regions_reproduce(labels.astype(np.int64, copy=False))
        if lost:
            add(
                "error",
                "regions_do_not_reproduce",
                f"painting the regions in regions_class_order {list(scheme.regions_class_order or ())} does not "
                f"give back label value(s) {lost} of this file; fix the regions or their order in dataset.json",
            )
    if reference is not None:
        ref_path, ref_volume = reference
        if volume.geometry.shape != ref_volume.geometry.shape:
            add(
                "error",
                "shape_mismatch",
                f"label shape {volume.geometry.shape} differs from image {dataset.relative(ref_path)} "
                f"shape {ref_volume.geometry.shape}",
            )
        elif not _geometry_close(volume, ref_volume):
            add(
                "error",
                "geometry_mismatch",
                f"label geometry differs from image {dataset.relative(ref_path)}: "
                f"{volume.geometry.describe()} vs {ref_volume.geometry.describe()}",
            )
    return problems


def _geometry_close(a: Volume, b: Volume) -> bool:
    return a.geometry.affine_close(b.geometry, atol_mm=GEOMETRY_ATOL_MM, rtol=GEOMETRY_RTOL)


def _strip_path(message: str, path: Path) -> str:
    """Drop the leading '<path>: ' from a reader message (the problem names the file already)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
