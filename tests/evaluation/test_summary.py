"""The one summary type: accumulating cases, NaN-aware means with counts, the JSON schema and its loader."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nnseg.evaluation import (
    METRIC_NAMES,
    EvaluationSummary,
    MetricAccumulator,
    compute_metrics,
)
from nnseg.schema import SchemaError

SPACING = (2.0, 1.0, 0.5)
LABELS = {"organ": 1, "lesion": 2, "whole": (1, 2)}


def _case(shift: int, *, lesion_in_ref: bool = True, lesion_in_pred: bool = True) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((10, 12, 14), dtype=np.uint8)
    ref[2:8, 2:9, 2:10] = 1
    if lesion_in_ref:
        ref[4:6, 4:6, 4:6] = 2
    pred = np.zeros_like(ref)
    pred[2:8, 2:9, 2 + shift : 10 + shift] = 1
    if lesion_in_pred:
        pred[4:6, 4:6, 5:7] = 2
    return pred, ref


CASES = {"b": _case(1, lesion_in_ref=False), "a": _case(0), "c": _case(2, lesion_in_pred=False)}


def _accumulate(**kwargs) -> MetricAccumulator:
    accumulator = MetricAccumulator(LABELS, **kwargs)
    for name, (pred, ref) in CASES.items():
        accumulator.add(name, pred, ref, SPACING, prediction_path=f"pred/{name}.nii.gz")
    return accumulator


def test_accumulator_means_counts_and_order():
    accumulator = _accumulate()
    accumulator.warn("something odd")
    summary = accumulator.summary("pred", "ref")
    assert [case.case for case in summary.cases] == ["a", "b", "c"]  # sorted by case name
    assert summary.metrics == METRIC_NAMES and summary.warnings == ("something odd",)
    expected = {name: compute_metrics(*CASES[name], SPACING, LABELS) for name in CASES}
    for case in summary.cases:
        np.testing.assert_equal(
            {n: m.to_dict() for n, m in case.metrics.items()}, {n: m.to_dict() for n, m in expected[case.case].items()}
        )
        assert case.prediction == f"pred/{case.case}.nii.gz" and case.reference == ""
    lesion = summary.per_class["lesion"]
    assert (lesion.num_cases, lesion.num_reference_empty, lesion.num_prediction_empty) == (3, 1, 1)
    assert lesion.count["hd95_mm"] == 1 and lesion.mean["hd95_mm"] == expected["a"]["lesion"].hd95_mm
    assert lesion.count["dice"] == 3
    assert lesion.mean["dice"] == pytest.approx(np.mean([expected[c]["lesion"].dice for c in CASES]))
    assert summary.mean_dice_per_class == {name: s.mean["dice"] for name, s in summary.per_class.items()}
    assert summary.mean_dice == pytest.approx(np.mean(list(summary.mean_dice_per_class.values())))


def test_summary_round_trips_through_its_json(tmp_path: Path):
    summary = _accumulate().summary("pred", "ref")
    path = summary.write_json(tmp_path / "deep" / "summary.json")

    def no_nan(token):
        raise AssertionError(f"summary.json holds {token}, which is not JSON")

    data = json.loads(path.read_text(), parse_constant=no_nan)
    assert data["cases"][1]["metrics"]["lesion"]["hd95_mm"] is None  # case b: reference empty, undefined
    assert data["mean_dice_per_class"]["lesion"] == pytest.approx(summary.per_class["lesion"].mean["dice"])
    loaded = EvaluationSummary.load(path)
    assert loaded.to_dict() == summary.to_dict()
    assert math.isnan(loaded.cases[1].metrics["lesion"].hd95_mm)
    assert loaded.cases[0].metrics["organ"] == summary.cases[0].metrics["organ"]


def test_dice_only_summary_holds_only_dice():
    summary = _accumulate(metrics=("dice",)).summary()
    data = summary.to_dict()
    assert data["metrics"] == ["dice"]
    assert set(data["cases"][0]["metrics"]["organ"]) == {"dice", "reference_empty", "prediction_empty"}
    assert set(data["per_class"]["organ"]["mean"]) == {"dice"}
    assert summary.mean_dice == pytest.approx(_accumulate().summary().mean_dice)
    assert "HD95" not in summary.table() and "Dice" in summary.table()
    assert summary.to_csv().splitlines()[0] == "case,class,labels,dice,reference_empty,prediction_empty"
    assert EvaluationSummary.from_dict(data).to_dict() == data


def test_accumulator_errors():
    with pytest.raises(ValueError, match="needs 'dice'"):
        MetricAccumulator(LABELS, metrics=("hd95_mm",))
    with pytest.raises(ValueError, match="unknown metric"):
        MetricAccumulator(LABELS, metrics=("dice", "hausdorff"))
    with pytest.raises(ValueError, match="tolerance"):
        MetricAccumulator(LABELS, nsd_tolerance_mm=-1.0)
    accumulator = _accumulate(metrics="dice")
    with pytest.raises(ValueError, match="added twice"):
        accumulator.add("a", *CASES["a"], SPACING)
    other = MetricAccumulator({"organ": 1}, metrics="dice")
    other.add("z", *CASES["a"], SPACING)
    with pytest.raises(ValueError, match="has classes"):
        accumulator.add_result(other.summary().cases[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("mean_dice_per_class"), "mean_dice_per_class: missing"),
        (lambda d: d.update(extra=1), "extra: unknown key"),
        (lambda d: d.update(metrics=["dice", "hd"]), "metrics: unknown metric"),
        (
            lambda d: d["cases"][0]["metrics"]["organ"].update(dice="high"),
            r"cases\[0\].metrics.organ.dice: expected a number",
        ),
        (lambda d: d["cases"][2]["metrics"]["lesion"].pop("nsd"), r"cases\[2\].metrics.lesion.nsd: missing"),
        (lambda d: d["per_class"]["whole"]["count"].update(tp=1.5), "per_class.whole.count.tp: expected an integer"),
        (lambda d: d["per_class"].pop("whole"), "per_class.whole: missing"),
    ],
)
def test_load_names_the_file_and_the_bad_key(tmp_path: Path, change, message):
    data = _accumulate().summary().to_dict()
    change(data)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match=f"{re.escape(str(path))}: {message}"):
        EvaluationSummary.load(path)
