"""Evaluate a folder of predicted label maps against a folder of reference label maps.

The reference folder defines the cases: every image file in it (``case.nii.gz``, ``case.mha``, ...)
is one case, matched by case name (the file name without its suffix) to the prediction folder.
A reference without a prediction is an error; a prediction without a reference is ignored and
reported in the summary's warnings. Files whose names start with ``.`` and files that are not
images (``plans.json``, ...) are skipped.

Metrics and empty-mask conventions: :mod:`nnseg.evaluation.metrics`. The summary and its JSON
schema (``metrics.json``, the same as final validation's ``summary.json``):
:mod:`nnseg.evaluation.summary`. Classes made only of label 0 (the background, as in
dataset.json's labels) are not evaluated, so dataset.json's ``labels`` can be passed as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import (
    check_nsd_tolerance,
    compute_metrics,
    empty_class_metrics,
)
from nnseg.evaluation.summary import CaseResult, EvaluationSummary, MetricAccumulator
from nnseg.io import IMAGE_SUFFIXES, Volume, read_label_map, split_suffix
from nnseg.labels import evaluated_classes
from nnseg.parallel import parallel_map
from nnseg.progress import progress

#: Missing case names listed in an error message before "and N more".
_MAX_LISTED = 20


def _list_cases(folder: Path, file_ending: str | None, role: str) -> dict[str, Path]:
    """Case name -> file for the image files of a folder."""
    if not folder.is_dir():
        raise NnsegError(f"{folder}: {role} folder not found")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if file_ending is not None:
            if not name.endswith(file_ending):
                continue
            case = name[: -len(file_ending)]
        elif name.lower().endswith(IMAGE_SUFFIXES):
            case = split_suffix(path)[0]
        else:
            continue
        if case in cases:
            raise NnsegError(
                f"{folder}: case {case!r} has two {role} files, {cases[case].name} and {name}; "
                f"keep one or pass file_ending"
            )
        cases[case] = path
    return cases


def _pair_cases(
    pred_dir: Path, ref_dir: Path, file_ending: str | None
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(case, prediction, reference) triples sorted by case, and warnings about unmatched predictions."""
    references = _list_cases(ref_dir, file_ending, "reference")
    if not references:
        ending = file_ending or ", ".join(IMAGE_SUFFIXES)
        raise NnsegError(f"{ref_dir}: no reference label maps ({ending}) found")
    predictions = _list_cases(pred_dir, file_ending, "prediction")
    missing = [case for case in references if case not in predictions]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise NnsegError(
            f"{pred_dir}: {len(missing)} of {len(references)} reference cases have no prediction: {listed}{more}"
        )
    warnings = []
    extra = [predictions[case].name for case in predictions if case not in references]
    if extra:
        warnings.append(
            f"{pred_dir}: {len(extra)} predictions have no reference in {ref_dir} and were ignored: "
            + ", ".join(extra[:_MAX_LISTED])
            + (" ..." if len(extra) > _MAX_LISTED else "")
        )
    pairs = [(case, predictions[case], references[case]) for case in sorted(references)]
    return pairs, warnings


def _read_label_map(path: Path) -> Volume:
    return read_label_map(path)


def _check_geometry(pred_path: Path, prediction: Volume, ref_path: Path, reference: Volume) -> None:
    pred_geo, ref_geo = prediction.geometry, reference.geometry
    if pred_geo.shape != ref_geo.shape:
        raise NnsegError(
            f"{pred_path}: shape {pred_geo.shape} differs from its reference {ref_path} (shape {ref_geo.shape})"
        )
    if not pred_geo.affine_close(ref_geo):
        differ = [
            what
            for what, a, b in (
                ("spacing", pred_geo.spacing, ref_geo.spacing),
                ("origin", pred_geo.origin_ras, ref_geo.origin_ras),
                ("direction", pred_geo.direction_ras, ref_geo.direction_ras),
            )
            if not np.allclose(a, b, rtol=1e-4, atol=1e-3)
        ] or ["affine"]
        raise NnsegError(
            f"{pred_path}: geometry ({' and '.join(differ)}) differs from its reference {ref_path}: "
            f"prediction {pred_geo.describe()}, reference {ref_geo.describe()}"
        )


def _present_values(array: np.ndarray) -> set[int]:
    """Nonzero values of an integer label map."""
    if array.size == 0:
        return set()
    low, high = int(array.min()), int(array.max())
    if low >= 0 and high < 1 << 16:
        values = np.flatnonzero(np.bincount(array.ravel(), minlength=1))
    else:
        values = np.unique(array)
    return {int(v) for v in values if v != 0}


def _evaluate_case(
    pair: tuple[str, Path, Path],
    labels: dict[str, tuple[int, ...]] | None,
    nsd_tolerance_mm: float,
    ignore_value: int | None = None,
) -> tuple[CaseResult, set[int], set[int]]:
    """Metrics of one case; with ``labels=None``, of every nonzero value present in either file.

    Returns:
        (result, nonzero values in the reference, nonzero values in the prediction); the value
        sets are empty when ``labels`` is given.
    """
    case, pred_path, ref_path = pair
    reference = _read_label_map(ref_path)
    prediction = _read_label_map(pred_path)
    _check_geometry(pred_path, prediction, ref_path, reference)
    ref_values: set[int] = set()
    pred_values: set[int] = set()
    if labels is None:
        ref_values, pred_values = _present_values(reference.array), _present_values(prediction.array)
        labels = {str(v): (v,) for v in sorted(ref_values | pred_values)}
    metrics = compute_metrics(
        prediction.array,
        reference.array,
        reference.geometry.spacing,
        labels,
        nsd_tolerance_mm=nsd_tolerance_mm,
        ignore_value=ignore_value,
    )
    return CaseResult(case, str(pred_path), str(ref_path), metrics), ref_values, pred_values


def _check_labels(labels: Mapping[str, int | Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], int | None]:
    """The classes to score (background dropped) and the ignore value (``ignore`` label, or a LabelScheme's)."""
    try:
        classes, ignore = evaluated_classes(labels)
    except ValueError as exc:
        raise NnsegError(str(exc)) from None
    foreground = {name: values for name, values in classes.items() if values != (0,)}
    if not foreground:
        raise NnsegError(f"labels {dict(labels)!r} name no foreground class (a class made only of label 0 is skipped)")
    return foreground, ignore


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    labels: Mapping[str, int | tuple[int, ...]] | None = None,
    *,
    nsd_tolerance_mm: float = 1.0,
    workers: int = 1,
    file_ending: str | None = None,
    show_progress: bool = True,
) -> EvaluationSummary:
    """Evaluate every reference label map against the prediction of the same case name.

    Args:
        pred_dir: folder of predicted label maps.
        ref_dir: folder of reference label maps; its files define the cases.
        labels: class name -> label value, or tuple of values for a region (e.g. dataset.json's
            ``labels`` or its :class:`~nnseg.labels.LabelScheme`; background classes are skipped, and the
            ``ignore`` label's voxels are not scored). Default: every nonzero value present in
            the references, named by its value (``"1"``, ``"2"``, ...).
        nsd_tolerance_mm: tolerance of the normalized surface Dice, mm.
        workers: processes evaluating cases in parallel.
        file_ending: only files ending so (e.g. ``".nii.gz"``); default every supported image suffix.
        show_progress: show a progress bar on stderr.

    Raises:
        NnsegError: a folder is missing or empty, a reference has no prediction (all are listed),
            a file is unreadable or not a 3D integer label map, or a prediction's shape or
            geometry differs from its reference (both files are named).
    """
    try:
        check_nsd_tolerance(nsd_tolerance_mm)
    except ValueError as exc:
        raise NnsegError(str(exc)) from None
    class_labels, ignore = (None, None) if labels is None else _check_labels(labels)
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    pairs, warnings = _pair_cases(pred_dir, ref_dir, file_ending)
    job = partial(_evaluate_case, labels=class_labels, nsd_tolerance_mm=nsd_tolerance_mm, ignore_value=ignore)
    outputs = list(
        progress(
            parallel_map(job, pairs, workers=workers),
            total=len(pairs),
            desc="evaluate",
            unit="case",
            enabled=show_progress,
        )
    )
    results = [result for result, _, _ in outputs]
    if class_labels is None:
        class_labels, results = _labels_from_references(outputs, ref_dir, warnings)
    accumulator = MetricAccumulator(class_labels, nsd_tolerance_mm=nsd_tolerance_mm, ignore_value=ignore)
    for result in results:
        accumulator.add_result(result)
    for warning in warnings:
        accumulator.warn(warning)
    return accumulator.summary(str(pred_dir), str(ref_dir))


def _labels_from_references(
    outputs: list[tuple[CaseResult, set[int], set[int]]], ref_dir: Path, warnings: list[str]
) -> tuple[dict[str, tuple[int, ...]], list[CaseResult]]:
    """Classes = nonzero values of any reference; each case gets every class (absent ones from both: empty)."""
    ref_values = set().union(*(values for _, values, _ in outputs))
    if not ref_values:
        raise NnsegError(
            f"{ref_dir}: no reference holds a nonzero label, so there is nothing to evaluate; "
            f"pass the labels to evaluate explicitly"
        )
    pred_only = sorted(set().union(*(values for _, _, values in outputs)) - ref_values)
    if pred_only:
        warnings.append(f"predictions hold label values that no reference holds, not evaluated: {pred_only}")
    labels: dict[str, tuple[int, ...]] = {str(v): (v,) for v in sorted(ref_values)}
    results = [
        CaseResult(
            r.case, r.prediction, r.reference, {name: r.metrics.get(name) or empty_class_metrics() for name in labels}
        )
        for r, _, _ in outputs
    ]
    return labels, results
