"""One summary type for every evaluation: per case × class metrics, NaN-aware means with counts, warnings.

:class:`MetricAccumulator` collects cases (scoring arrays with :func:`~nnseg.evaluation.metrics.compute_metrics`,
or taking results scored elsewhere) and returns an :class:`EvaluationSummary`. ``nnseg evaluate``
writes it as ``metrics.json`` (+ ``metrics.csv``), final validation as ``<fold>/validation/summary.json``;
find-best and postprocessing decisions aggregate through the same code. Both files have one schema and
load back with :meth:`EvaluationSummary.load`::

    {
      "prediction_folder": str, "reference_folder": str,
      "labels": {class: [label values]},
      "metrics": [names computed, in METRIC_NAMES order],
      "nsd_tolerance_mm": float,
      "num_cases": int,
      "mean_dice": float,                  # mean over the classes of their mean Dice
      "mean_dice_per_class": {class: float},
      "per_class": {class: {"labels": [...], "num_cases": int, "num_reference_empty": int,
                            "num_prediction_empty": int, "mean": {metric: float}, "count": {metric: int}}},
      "cases": [{"case": str, "prediction": str, "reference": str, "mean_dice": float,
                 "metrics": {class: {metric: value, ..., "reference_empty": bool, "prediction_empty": bool}}}],
      "warnings": [str]
    }

An undefined value (NaN, see the empty-mask conventions of :mod:`nnseg.evaluation.metrics`) is
``null``; a mean skips undefined values and ``count`` says how many it is over. Metrics not
computed are absent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from nnseg.atomic import atomic_path, remove_stale_temporaries
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import (
    METRIC_NAMES,
    ClassMetrics,
    check_metrics,
    check_nsd_tolerance,
    compute_metrics,
    json_safe,
)
from nnseg.labels import normalize_labels
from nnseg.schema import SchemaError, read_json

#: Metrics shown by :meth:`EvaluationSummary.table`, when computed.
_TABLE_METRICS = ("dice", "iou", "hd95_mm", "nsd")

#: Per class per case flags stored next to the metrics.
_FLAGS = ("reference_empty", "prediction_empty")

#: Metrics holding voxel counts (integers in JSON).
_COUNT_METRICS = ("tp", "fp", "fn")


def _mean_and_count(values: Iterable[float | None]) -> tuple[float, int]:
    """Mean over the defined values (None and NaN skipped), and how many there were."""
    column = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    defined = column[~np.isnan(column)]
    return (float(defined.mean()) if defined.size else math.nan), int(defined.size)


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case.

    Attributes:
        case: case name (reference file name without suffix).
        prediction: path of the predicted label map ("" when it has none, e.g. arrays in memory).
        reference: path of the reference label map ("" when it has none).
        metrics: class name -> metrics, in the order of the summary's labels.
    """

    case: str
    prediction: str
    reference: str
    metrics: dict[str, ClassMetrics]

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the classes (NaN when there are none or Dice was not computed)."""
        values = [m.dice for m in self.metrics.values() if m.dice is not None]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict:
        return {
            "case": self.case,
            "prediction": self.prediction,
            "reference": self.reference,
            "mean_dice": self.mean_dice,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, data: object, classes: Sequence[str], metrics: tuple[str, ...], where: str) -> CaseResult:
        """Inverse of :meth:`to_dict` (undefined values, null, become NaN); SchemaError names the bad key."""
        data = _keys(data, ("case", "prediction", "reference", "mean_dice", "metrics"), where)
        per_class = _keys(data["metrics"], classes, f"{where}.metrics")
        return cls(
            _text(data["case"], f"{where}.case"),
            _text(data["prediction"], f"{where}.prediction"),
            _text(data["reference"], f"{where}.reference"),
            {name: _class_metrics(per_class[name], metrics, f"{where}.metrics.{name}") for name in classes},
        )


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

    @classmethod
    def from_dict(cls, data: object, metrics: tuple[str, ...], where: str) -> ClassSummary:
        """Inverse of :meth:`to_dict`; SchemaError names the bad key."""
        data = _keys(
            data, ("labels", "num_cases", "num_reference_empty", "num_prediction_empty", "mean", "count"), where
        )
        mean = _keys(data["mean"], metrics, f"{where}.mean")
        count = _keys(data["count"], metrics, f"{where}.count")
        return cls(
            labels=_labels(data["labels"], f"{where}.labels"),
            mean={name: _number(mean[name], f"{where}.mean.{name}") for name in metrics},
            count={name: _integer(count[name], f"{where}.count.{name}") for name in metrics},
            num_cases=_integer(data["num_cases"], f"{where}.num_cases"),
            num_reference_empty=_integer(data["num_reference_empty"], f"{where}.num_reference_empty"),
            num_prediction_empty=_integer(data["num_prediction_empty"], f"{where}.num_prediction_empty"),
        )


def summarize_class(
    values: tuple[int, ...], results: Sequence[ClassMetrics], metrics: Iterable[str] = METRIC_NAMES
) -> ClassSummary:
    """NaN-aware means (with counts) of one class's ``metrics`` over cases."""
    mean: dict[str, float] = {}
    count: dict[str, int] = {}
    for metric in check_metrics(metrics):
        mean[metric], count[metric] = _mean_and_count(getattr(r, metric) for r in results)
    return ClassSummary(
        labels=values,
        mean=mean,
        count=count,
        num_cases=len(results),
        num_reference_empty=sum(r.reference_empty for r in results),
        num_prediction_empty=sum(r.prediction_empty for r in results),
    )


_SUMMARY_KEYS = (
    "prediction_folder",
    "reference_folder",
    "labels",
    "metrics",
    "nsd_tolerance_mm",
    "num_cases",
    "mean_dice",
    "mean_dice_per_class",
    "per_class",
    "cases",
    "warnings",
)


@dataclass(frozen=True, eq=False)
class EvaluationSummary:
    """Result of an evaluation (:func:`~nnseg.evaluation.evaluate.evaluate_folders`, final validation, ...).

    Attributes:
        prediction_folder: the folder of predictions ("" when there is none).
        reference_folder: the folder of references ("" when there is none).
        labels: class name -> label values evaluated.
        metrics: the metric names computed, in :data:`METRIC_NAMES` order.
        nsd_tolerance_mm: tolerance of the normalized surface Dice.
        cases: per case per class metrics, sorted by case name.
        per_class: class name -> aggregate over the cases.
        mean_dice: mean over the (foreground) classes of their mean Dice.
        warnings: things that did not stop the evaluation (e.g. predictions without a reference).
    """

    prediction_folder: str
    reference_folder: str
    labels: dict[str, tuple[int, ...]]
    metrics: tuple[str, ...]
    nsd_tolerance_mm: float
    cases: tuple[CaseResult, ...]
    per_class: dict[str, ClassSummary]
    mean_dice: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mean_dice_per_class(self) -> dict[str, float]:
        """Class name -> mean Dice over the cases."""
        return {name: summary.mean["dice"] for name, summary in self.per_class.items()}

    def to_dict(self) -> dict:
        """JSON-ready representation (undefined values, NaN, become None); the schema is in the module doc."""
        return cast(
            dict,
            json_safe(
                {
                    "prediction_folder": self.prediction_folder,
                    "reference_folder": self.reference_folder,
                    "labels": {name: list(values) for name, values in self.labels.items()},
                    "metrics": list(self.metrics),
                    "nsd_tolerance_mm": self.nsd_tolerance_mm,
                    "num_cases": len(self.cases),
                    "mean_dice": self.mean_dice,
                    "mean_dice_per_class": self.mean_dice_per_class,
                    "per_class": {name: summary.to_dict() for name, summary in self.per_class.items()},
                    "cases": [case.to_dict() for case in self.cases],
                    "warnings": list(self.warnings),
                }
            ),
        )

    @classmethod
    def from_dict(cls, data: object) -> EvaluationSummary:
        """Inverse of :meth:`to_dict` (null becomes NaN).

        Raises:
            SchemaError: a key is missing or unknown, or a value has the wrong type; the message gives its path.
        """
        data = _keys(data, _SUMMARY_KEYS, "")
        names = data["metrics"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SchemaError(f"metrics: expected a list of metric names, got {names!r}")
        try:
            metrics = check_metrics(names)
        except ValueError as exc:
            raise SchemaError(f"metrics: {exc}") from None
        labels = _keys(data["labels"], None, "labels")
        classes = tuple(labels)
        per_class = _keys(data["per_class"], classes, "per_class")
        _keys(data["mean_dice_per_class"], classes, "mean_dice_per_class")
        _integer(data["num_cases"], "num_cases")
        cases = data["cases"]
        warnings = data["warnings"]
        if not isinstance(cases, list):
            raise SchemaError(f"cases: expected a list, got {type(cases).__name__}")
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise SchemaError("warnings: expected a list of strings")
        return cls(
            prediction_folder=_text(data["prediction_folder"], "prediction_folder"),
            reference_folder=_text(data["reference_folder"], "reference_folder"),
            labels={name: _labels(values, f"labels.{name}") for name, values in labels.items()},
            metrics=metrics,
            nsd_tolerance_mm=_number(data["nsd_tolerance_mm"], "nsd_tolerance_mm"),
            cases=tuple(CaseResult.from_dict(case, classes, metrics, f"cases[{i}]") for i, case in enumerate(cases)),
            per_class={name: ClassSummary.from_dict(s, metrics, f"per_class.{name}") for name, s in per_class.items()},
            mean_dice=_number(data["mean_dice"], "mean_dice"),
            warnings=tuple(warnings),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvaluationSummary:
        """Read ``metrics.json`` or ``validation/summary.json``; errors name the file and the bad key."""
        path = Path(path)
        data = read_json(path, "evaluation summary (metrics.json or validation/summary.json)")
        try:
            return cls.from_dict(data)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically (its folder is created)."""
        return _write_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    def to_csv(self) -> str:
        """One row per case and class; undefined values (NaN) are empty cells."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "class", "labels", *self.metrics, *_FLAGS])
        for case in self.cases:
            for name, metrics in case.metrics.items():
                values = [getattr(metrics, metric) for metric in self.metrics]
                writer.writerow(
                    [
                        case.case,
                        name,
                        "+".join(str(v) for v in self.labels[name]),
                        *("" if isinstance(v, float) and math.isnan(v) else v for v in values),
                        metrics.reference_empty,
                        metrics.prediction_empty,
                    ]
                )
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
        remove_stale_temporaries(out_dir)
        return self.write_json(out_dir / "metrics.json"), _write_atomic(out_dir / "metrics.csv", self.to_csv())

    def table(self) -> str:
        """Printable summary: one row per class with the mean Dice, IoU, HD95 and NSD (those computed).

        A mean over fewer cases than evaluated (undefined values skipped) shows its count, e.g. ``4.2 (n=3)``.
        """
        titles = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 mm", "nsd": f"NSD@{self.nsd_tolerance_mm:g}mm"}
        shown = [metric for metric in _TABLE_METRICS if metric in self.metrics]
        rows = [("class", "labels", *(titles[metric] for metric in shown))]
        for name, summary in self.per_class.items():
            cells = [name, "+".join(str(v) for v in summary.labels)]
            cells += [_mean_cell(summary.mean[m], summary.count[m], summary.num_cases) for m in shown]
            rows.append(tuple(cells))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        intro = (
            f"{len(self.cases)} cases, {len(self.per_class)} classes; "
            f"{self.prediction_folder} vs {self.reference_folder}"
        )
        footer = f"mean Dice over {len(self.per_class)} foreground classes: {_format(self.mean_dice)}"
        return "\n".join([intro, *lines, footer])


class MetricAccumulator:
    """Collects cases one at a time and summarizes them (a functional metric plus an accumulator, as in MONAI).

    Only per case × class metric values are kept, never the arrays, so cases can be streamed.
    """

    def __init__(
        self,
        labels: Mapping[str, int | Sequence[int]],
        *,
        metrics: str | Iterable[str] = METRIC_NAMES,
        nsd_tolerance_mm: float = 1.0,
        ignore_value: int | None = None,
    ) -> None:
        """
        Args:
            labels: class name -> label value, or tuple of values for a region.
            ignore_value: reference voxels holding this value (the ``ignore`` label) are not scored.
            metrics: names from :data:`METRIC_NAMES` to compute; must include ``dice`` (the summary's headline).
            nsd_tolerance_mm: tolerance of the normalized surface Dice.

        Raises:
            ValueError: bad labels, metric names or tolerance, or ``dice`` is not among the metrics.
        """
        self.labels = normalize_labels(labels)
        self.metrics = check_metrics(metrics)
        if "dice" not in self.metrics:
            raise ValueError(f"an evaluation summary needs 'dice' among its metrics, got {list(self.metrics)}")
        check_nsd_tolerance(nsd_tolerance_mm)
        self.nsd_tolerance_mm = float(nsd_tolerance_mm)
        self.ignore_value = ignore_value
        self._cases: dict[str, CaseResult] = {}
        self._warnings: list[str] = []

    def add(
        self,
        case: str,
        prediction: np.ndarray,
        reference: np.ndarray,
        spacing: Sequence[float],
        *,
        prediction_path: str = "",
        reference_path: str = "",
    ) -> CaseResult:
        """Score one case's label maps (array order, ``spacing`` in mm) and keep its metrics."""
        metrics = compute_metrics(
            prediction,
            reference,
            spacing,
            self.labels,
            metrics=self.metrics,
            nsd_tolerance_mm=self.nsd_tolerance_mm,
            ignore_value=self.ignore_value,
        )
        return self.add_result(CaseResult(case, prediction_path, reference_path, metrics))

    def add_result(self, result: CaseResult) -> CaseResult:
        """Keep a case scored elsewhere (e.g. in a worker process) with the same labels and metrics.

        Raises:
            ValueError: the case was added before, or its classes differ from the accumulator's labels.
        """
        if result.case in self._cases:
            raise ValueError(f"case {result.case!r} was added twice")
        if list(result.metrics) != list(self.labels):
            raise ValueError(f"case {result.case!r} has classes {list(result.metrics)}, expected {list(self.labels)}")
        self._cases[result.case] = result
        return result

    def warn(self, message: str) -> None:
        """Record something that did not stop the evaluation."""
        self._warnings.append(message)

    def summary(self, prediction_folder: str = "", reference_folder: str = "") -> EvaluationSummary:
        """The summary of the cases added so far (sorted by case name)."""
        cases = tuple(self._cases[name] for name in sorted(self._cases))
        per_class = {
            name: summarize_class(values, [case.metrics[name] for case in cases], self.metrics)
            for name, values in self.labels.items()
        }
        mean_dice = _mean_and_count(summary.mean["dice"] for summary in per_class.values())[0]
        return EvaluationSummary(
            prediction_folder=str(prediction_folder),
            reference_folder=str(reference_folder),
            labels=self.labels,
            metrics=self.metrics,
            nsd_tolerance_mm=self.nsd_tolerance_mm,
            cases=cases,
            per_class=per_class,
            mean_dice=mean_dice,
            warnings=tuple(self._warnings),
        )


# --- formatting and writing ----------------------------------------------------------------------------------


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


# --- reading -------------------------------------------------------------------------------------------------


def _keys(data: object, expected: Sequence[str] | None, where: str) -> dict:
    """``data`` as a dict, checked to hold exactly the ``expected`` keys (any keys when None)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where or 'top level'}: expected an object, got {type(data).__name__}")
    if expected is not None:
        prefix = f"{where}." if where else ""
        missing = [key for key in expected if key not in data]
        if missing:
            raise SchemaError(f"{prefix}{missing[0]}: missing")
        unknown = sorted(set(data) - set(expected))
        if unknown:
            raise SchemaError(f"{prefix}{unknown[0]}: unknown key (expected one of {list(expected)})")
    return data


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"{where}: expected a string, got {value!r}")
    return value


def _number(value: object, where: str) -> float:
    """A JSON number, or null for an undefined value (NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where}: expected an integer, got {value!r}")
    return value


def _labels(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SchemaError(f"{where}: expected a non-empty list of label values, got {value!r}")
    return tuple(_integer(v, f"{where}[{i}]") for i, v in enumerate(value))


def _class_metrics(data: object, metrics: tuple[str, ...], where: str) -> ClassMetrics:
    data = _keys(data, (*metrics, *_FLAGS), where)
    for flag in _FLAGS:
        if not isinstance(data[flag], bool):
            raise SchemaError(f"{where}.{flag}: expected true or false, got {data[flag]!r}")
    values: dict[str, Any] = {
        name: (_integer if name in _COUNT_METRICS else _number)(data[name], f"{where}.{name}") for name in metrics
    }
    return ClassMetrics(
        **{name: values.get(name) for name in METRIC_NAMES},
        reference_empty=data["reference_empty"],
        prediction_empty=data["prediction_empty"],
    )
