"""Evaluate a folder of predicted label maps against a folder of reference label maps.

The reference folder defines the cases: every image file in it (``case.nii.gz``, ``case.mha``, ...)
is one case, matched by case name (the file name without its suffix) to the prediction folder.
A reference without a prediction is an error; a prediction without a reference is ignored and
reported in :attr:`EvaluationSummary.warnings`. Files whose names start with ``.`` and files that
are not images (``plans.json``, ...) are skipped.

Metrics and empty-mask conventions: :mod:`nnseg.evaluation.metrics`. Classes made only of label
0 (the background, as in dataset.json's labels) are not evaluated, so dataset.json's ``labels``
can be passed as they are.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import (
    METRIC_NAMES,
    ClassMetrics,
    compute_metrics,
    empty_class_metrics,
    json_safe,
    normalize_labels,
)
from nnseg.io import IMAGE_SUFFIXES, Volume, read_label_map, split_suffix
from nnseg.parallel import parallel_map
from nnseg.progress import progress

#: Metrics shown by :meth:`EvaluationSummary.table`.
_TABLE_METRICS = ("dice", "iou", "hd95_mm", "nsd")

#: Missing case names listed in an error message before "and N more".
_MAX_LISTED = 20


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case.

    Attributes:
        case: case name (reference file name without suffix).
        prediction: path of the predicted label map.
        reference: path of the reference label map.
        metrics: class name -> metrics, in the order of the summary's labels.
    """

    case: str
    prediction: str
    reference: str
    metrics: dict[str, ClassMetrics]

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the classes (NaN when there are none)."""
        values = [m.dice for m in self.metrics.values()]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict:
        return {
            "case": self.case,
            "prediction": self.prediction,
            "reference": self.reference,
            "mean_dice": self.mean_dice,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class ClassSummary:
    """One class aggregated over the cases.

    Attributes:
        labels: the label values the class is made of.
        mean: metric name -> mean over the cases where the metric is defined (NaN values skipped).
        count: metric name -> how many cases that mean is over.
        num_cases: cases evaluated.
        num_reference_empty: cases whose reference lacks the class.
        num_prediction_empty: cases whose prediction lacks the class.
    """

    labels: tuple[int, ...]
    mean: dict[str, float]
    count: dict[str, int]
    num_cases: int
    num_reference_empty: int
    num_prediction_empty: int

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "num_cases": self.num_cases,
            "num_reference_empty": self.num_reference_empty,
            "num_prediction_empty": self.num_prediction_empty,
            "mean": dict(self.mean),
            "count": dict(self.count),
        }


@dataclass(frozen=True, eq=False)
class EvaluationSummary:
    """Result of :func:`evaluate_folders`.

    Attributes:
        prediction_folder: the folder of predictions.
        reference_folder: the folder of references.
        labels: class name -> label values evaluated.
        nsd_tolerance_mm: tolerance of the normalized surface Dice.
        cases: per case per class metrics, sorted by case name.
        per_class: class name -> aggregate over the cases.
        mean_dice: mean over the (foreground) classes of their mean Dice.
        warnings: things that did not stop the evaluation (e.g. predictions without a reference).
    """

    prediction_folder: str
    reference_folder: str
    labels: dict[str, tuple[int, ...]]
    nsd_tolerance_mm: float
    cases: tuple[CaseResult, ...]
    per_class: dict[str, ClassSummary]
    mean_dice: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """JSON-ready representation (undefined values, NaN, become None)."""
        return json_safe({
            "prediction_folder": self.prediction_folder,
            "reference_folder": self.reference_folder,
            "labels": {name: list(values) for name, values in self.labels.items()},
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
            "num_cases": len(self.cases),
            "mean_dice": self.mean_dice,
            "per_class": {name: summary.to_dict() for name, summary in self.per_class.items()},
            "cases": [case.to_dict() for case in self.cases],
            "warnings": list(self.warnings),
        })

    def to_csv(self) -> str:
        """One row per case and class; undefined values (NaN) are empty cells."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "class", "labels", *METRIC_NAMES, "reference_empty", "prediction_empty"])
        for case in self.cases:
            for name, metrics in case.metrics.items():
                values = [getattr(metrics, metric) for metric in METRIC_NAMES]
                writer.writerow([
                    case.case, name, "+".join(str(v) for v in self.labels[name]),
                    *("" if isinstance(v, float) and math.isnan(v) else v for v in values),
                    metrics.reference_empty, metrics.prediction_empty,
                ])
        return buffer.getvalue()

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.csv`` into ``out_dir`` (created if needed), each atomically.

        Returns:
            The paths of the JSON and the CSV file.
        """
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NnsegError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
        json_path = _write_atomic(out_dir / "metrics.json", json.dumps(self.to_dict(), indent=2) + "\n")
        csv_path = _write_atomic(out_dir / "metrics.csv", self.to_csv())
        return json_path, csv_path

    def table(self) -> str:
        """Printable summary: one row per class with the mean Dice, IoU, HD95 and NSD.

        A mean over fewer cases than evaluated (undefined values skipped) shows its count, e.g. ``4.2 (n=3)``.
        """
        titles = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 mm", "nsd": f"NSD@{self.nsd_tolerance_mm:g}mm"}
        header = ("class", "labels", *(titles[metric] for metric in _TABLE_METRICS))
        rows = [header]
        for name, summary in self.per_class.items():
            cells = [name, "+".join(str(v) for v in summary.labels)]
            for metric in _TABLE_METRICS:
                cells.append(_mean_cell(summary.mean[metric], summary.count[metric], summary.num_cases))
            rows.append(tuple(cells))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        intro = (f"{len(self.cases)} cases, {len(self.per_class)} classes; "
                 f"{self.prediction_folder} vs {self.reference_folder}")
        footer = f"mean Dice over {len(self.per_class)} foreground classes: {_format(self.mean_dice)}"
        return "\n".join([intro, *lines, footer])


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _mean_cell(value: float, count: int, num_cases: int) -> str:
    return _format(value) if count == num_cases else f"{_format(value)} (n={count})"


def _write_atomic(path: Path, text: str) -> Path:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NnsegError(f"{path}: cannot write ({exc.strerror})") from None
    return path


def summarize_class(values: tuple[int, ...], results: Sequence[ClassMetrics]) -> ClassSummary:
    """NaN-aware means (with counts) of one class's metrics over cases."""
    mean: dict[str, float] = {}
    count: dict[str, int] = {}
    for metric in METRIC_NAMES:
        column = np.asarray([float(getattr(r, metric)) for r in results], dtype=np.float64)
        defined = column[~np.isnan(column)]
        count[metric] = int(defined.size)
        mean[metric] = float(defined.mean()) if defined.size else math.nan
    return ClassSummary(
        labels=values, mean=mean, count=count, num_cases=len(results),
        num_reference_empty=sum(r.reference_empty for r in results),
        num_prediction_empty=sum(r.prediction_empty for r in results),
    )


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
        warnings.append(f"{pred_dir}: {len(extra)} predictions have no reference in {ref_dir} and were ignored: "
                        + ", ".join(extra[:_MAX_LISTED]) + (" ..." if len(extra) > _MAX_LISTED else ""))
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
        differ = [what for what, a, b in (
            ("spacing", pred_geo.spacing, ref_geo.spacing),
            ("origin", pred_geo.origin_ras, ref_geo.origin_ras),
            ("direction", pred_geo.direction_ras, ref_geo.direction_ras),
        ) if not np.allclose(a, b, rtol=1e-4, atol=1e-3)] or ["affine"]
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
    pair: tuple[str, Path, Path], labels: dict[str, tuple[int, ...]] | None, nsd_tolerance_mm: float
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
    metrics = compute_metrics(prediction.array, reference.array, reference.geometry.spacing, labels,
                              nsd_tolerance_mm=nsd_tolerance_mm)
    return CaseResult(case, str(pred_path), str(ref_path), metrics), ref_values, pred_values


def _check_labels(labels: Mapping[str, int | Sequence[int]]) -> dict[str, tuple[int, ...]]:
    try:
        normalized = normalize_labels(labels)
    except ValueError as exc:
        raise NnsegError(str(exc)) from None
    foreground = {name: values for name, values in normalized.items() if values != (0,)}
    if not foreground:
        raise NnsegError(f"labels {dict(labels)!r} name no foreground class (a class made only of label 0 is skipped)")
    return foreground


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    labels: dict[str, int | tuple[int, ...]] | None = None,
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
            ``labels``; background classes are skipped). Default: every nonzero value present in
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
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise NnsegError(f"NSD tolerance must be a finite number >= 0 mm, got {nsd_tolerance_mm}")
    class_labels = None if labels is None else _check_labels(labels)
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    pairs, warnings = _pair_cases(pred_dir, ref_dir, file_ending)
    job = partial(_evaluate_case, labels=class_labels, nsd_tolerance_mm=nsd_tolerance_mm)
    outputs = list(progress(parallel_map(job, pairs, workers=workers), total=len(pairs), desc="evaluate",
                            unit="case", enabled=show_progress))
    results = [result for result, _, _ in outputs]
    if class_labels is None:
        class_labels, results = _labels_from_references(outputs, ref_dir, warnings)
    per_class = {name: summarize_class(values, [r.metrics[name] for r in results])
                 for name, values in class_labels.items()}
    class_dice = [summary.mean["dice"] for summary in per_class.values()]
    return EvaluationSummary(
        prediction_folder=str(pred_dir), reference_folder=str(ref_dir), labels=class_labels,
        nsd_tolerance_mm=float(nsd_tolerance_mm), cases=tuple(results), per_class=per_class,
        mean_dice=float(np.nanmean(class_dice)) if class_dice else math.nan, warnings=tuple(warnings),
    )


def _labels_from_references(
    outputs: list[tuple[CaseResult, set[int], set[int]]], ref_dir: Path, warnings: list[str]
) -> tuple[dict[str, tuple[int, ...]], list[CaseResult]]:
    """Classes = nonzero values of any reference; each case gets every class (absent ones from both: empty)."""
    ref_values = set().union(*(values for _, values, _ in outputs))
    if not ref_values:
        raise NnsegError(f"{ref_dir}: no reference holds a nonzero label, so there is nothing to evaluate; "
                         f"pass the labels to evaluate explicitly")
    pred_only = sorted(set().union(*(values for _, _, values in outputs)) - ref_values)
    if pred_only:
        warnings.append(f"predictions hold label values that no reference holds, not evaluated: {pred_only}")
    labels = {str(v): (v,) for v in sorted(ref_values)}
    results = [
        CaseResult(r.case, r.prediction, r.reference,
                   {name: r.metrics.get(name) or empty_class_metrics() for name in labels})
        for r, _, _ in outputs
    ]
    return labels, results
