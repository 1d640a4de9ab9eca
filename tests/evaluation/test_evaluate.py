"""Folder evaluation: pairing, geometry checks, default labels, aggregation and the written json/csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nnseg.errors import NnsegError
from nnseg.evaluation import EvaluationSummary, compute_metrics, evaluate_folders
from nnseg.io import Geometry, read_volume, write_volume

SHAPE = (12, 16, 20)  # array order (k, j, i)
SPACING_IJK = (0.8, 0.9, 2.5)  # affine column norms, file order (i, j, k)


def _geometry(origin=(10.0, -5.0, 3.0), spacing_ijk=SPACING_IJK, shape=SHAPE) -> Geometry:
    affine = np.diag([*spacing_ijk, 1.0])
    affine[:2, :2] = -affine[:2, :2]  # LPS-like orientation
    affine[:3, 3] = origin
    return Geometry(affine=affine, shape=shape)


def _box(label_map: np.ndarray, value: int, start, size) -> None:
    label_map[tuple(slice(s, s + n) for s, n in zip(start, size))] = value


def _case_arrays(shift: int, *, with_core: bool = True, pred_core: bool = True) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(SHAPE, dtype=np.uint8)
    _box(ref, 1, (2, 3, 3), (8, 10, 12))
    if with_core:
        _box(ref, 2, (4, 5, 5), (3, 4, 4))
    pred = np.zeros(SHAPE, dtype=np.uint8)
    _box(pred, 1, (2, 3, 3 + shift), (8, 10, 12))
    if pred_core:
        _box(pred, 2, (4, 5, 6), (3, 4, 4))
    return pred, ref


def _write_case(
    pred_dir: Path, ref_dir: Path, case: str, pred: np.ndarray, ref: np.ndarray, pred_geometry: Geometry | None = None
) -> None:
    write_volume(ref_dir / f"{case}.nii.gz", ref, _geometry(), is_label=True)
    write_volume(pred_dir / f"{case}.nii.gz", pred, pred_geometry or _geometry(), is_label=True)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Three cases: a good one, one without the core in the reference (pred has it), one whose prediction misses it."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    arrays = {
        "case_a": _case_arrays(0),
        "case_b": _case_arrays(2, with_core=False),
        "case_c": _case_arrays(1, pred_core=False),
    }
    for case, (pred, ref) in arrays.items():
        _write_case(pred_dir, ref_dir, case, pred, ref)
    return pred_dir, ref_dir, arrays


LABELS = {"background": 0, "edema": 1, "core": 2, "whole": (1, 2)}


def _assert_same_metrics(first, second) -> None:
    """Equal per case per class metrics, NaN equal to NaN."""
    as_dicts = [[{name: m.to_dict() for name, m in metrics.items()} for metrics in side] for side in (first, second)]
    np.testing.assert_equal(*as_dicts)


def test_evaluate_folders_metrics_and_aggregates(folders):
    pred_dir, ref_dir, arrays = folders
    summary = evaluate_folders(pred_dir, ref_dir, LABELS, nsd_tolerance_mm=1.0, show_progress=False)
    assert isinstance(summary, EvaluationSummary)
    assert list(summary.labels) == ["edema", "core", "whole"]  # background is skipped
    assert [c.case for c in summary.cases] == ["case_a", "case_b", "case_c"]
    spacing = read_volume(ref_dir / "case_a.nii.gz").geometry.spacing  # float32 in the file
    assert spacing == pytest.approx((2.5, 0.9, 0.8))
    expected = [compute_metrics(*arrays[case.case], spacing, summary.labels) for case in summary.cases]
    _assert_same_metrics([case.metrics for case in summary.cases], expected)
    core = summary.per_class["core"]
    assert core.num_cases == 3 and core.num_reference_empty == 1 and core.num_prediction_empty == 1
    # HD95 is undefined for case_b (reference empty) and case_c (prediction empty): the mean is over case_a only
    assert core.count["hd95_mm"] == 1
    assert core.mean["hd95_mm"] == pytest.approx(summary.cases[0].metrics["core"].hd95_mm)
    assert core.count["dice"] == 3
    assert core.mean["dice"] == pytest.approx(np.mean([c.metrics["core"].dice for c in summary.cases]))
    expected = np.mean([summary.per_class[name].mean["dice"] for name in ("edema", "core", "whole")])
    assert summary.mean_dice == pytest.approx(expected)
    assert summary.warnings == ()


def test_write_json_and_csv(folders, tmp_path):
    pred_dir, ref_dir, _ = folders
    summary = evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
    json_path, csv_path = summary.write(tmp_path / "out" / "eval")
    assert (json_path.name, csv_path.name) == ("metrics.json", "metrics.csv")
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["metrics.csv", "metrics.json"]  # no temp files left

    def no_nan(token):
        raise AssertionError(f"metrics.json holds {token}, which is not JSON")

    data = json.loads(json_path.read_text(), parse_constant=no_nan)
    assert data["num_cases"] == 3 and data["labels"]["whole"] == [1, 2]
    assert data["per_class"]["core"]["count"]["hd95_mm"] == 1
    assert data["cases"][1]["metrics"]["core"]["hd95_mm"] is None
    assert data["mean_dice"] == pytest.approx(summary.mean_dice)

    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3 * 3
    row = next(r for r in rows if r["case"] == "case_b" and r["class"] == "core")
    assert row["hd95_mm"] == "" and row["reference_empty"] == "True" and float(row["dice"]) == 0.0
    whole = next(r for r in rows if r["case"] == "case_a" and r["class"] == "whole")
    assert whole["labels"] == "1+2"
    assert float(whole["dice"]) == pytest.approx(summary.cases[0].metrics["whole"].dice)


def test_table_lists_classes_and_counts(folders):
    pred_dir, ref_dir, _ = folders
    table = evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False).table()
    lines = table.splitlines()
    assert "Dice" in lines[1] and "HD95" in lines[1] and "NSD@1mm" in lines[1]
    assert any(line.startswith("core") and "(n=1)" in line for line in lines)
    assert "mean Dice over 3 foreground classes" in lines[-1]


def test_default_labels_are_reference_values(folders):
    pred_dir, ref_dir, arrays = folders
    pred, _ = arrays["case_a"]
    pred = pred.copy()
    pred[0, 0, 0] = 5  # a value no reference holds
    write_volume(pred_dir / "case_a.nii.gz", pred, _geometry(), is_label=True)
    summary = evaluate_folders(pred_dir, ref_dir, show_progress=False)
    assert summary.labels == {"1": (1,), "2": (2,)}
    assert any("[5]" in w for w in summary.warnings)
    assert summary.cases[1].metrics["2"].reference_empty
    explicit = evaluate_folders(pred_dir, ref_dir, {"1": 1, "2": 2}, show_progress=False)
    _assert_same_metrics([c.metrics for c in summary.cases], [c.metrics for c in explicit.cases])


def test_class_absent_everywhere_in_one_case_is_filled_as_empty(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    _write_case(pred_dir, ref_dir, "with_core", *_case_arrays(0))
    _write_case(pred_dir, ref_dir, "no_core", *_case_arrays(0, with_core=False, pred_core=False))
    summary = evaluate_folders(pred_dir, ref_dir, show_progress=False)
    empty = summary.cases[0].metrics["2"]  # "no_core" sorts first
    assert (empty.dice, empty.nsd, empty.hd95_mm, empty.reference_empty) == (1.0, 1.0, 0.0, True)


def test_parallel_equals_serial(folders):
    pred_dir, ref_dir, _ = folders
    serial = evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
    parallel = evaluate_folders(pred_dir, ref_dir, LABELS, workers=2, show_progress=False)
    _assert_same_metrics([c.metrics for c in serial.cases], [c.metrics for c in parallel.cases])


def test_extra_prediction_is_a_warning_and_non_images_are_skipped(folders):
    pred_dir, ref_dir, arrays = folders
    write_volume(pred_dir / "stray.nii.gz", arrays["case_a"][0], _geometry(), is_label=True)
    (pred_dir / "plans.json").write_text("{}")
    summary = evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
    assert len(summary.cases) == 3
    assert len(summary.warnings) == 1 and "stray.nii.gz" in summary.warnings[0]


def test_missing_predictions_are_listed(folders):
    pred_dir, ref_dir, _ = folders
    (pred_dir / "case_a.nii.gz").unlink()
    (pred_dir / "case_c.nii.gz").unlink()
    with pytest.raises(NnsegError, match="2 of 3 reference cases have no prediction: case_a, case_c"):
        evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)


def test_geometry_mismatch_names_both_files(folders):
    pred_dir, ref_dir, arrays = folders
    pred, _ = arrays["case_b"]
    write_volume(pred_dir / "case_b.nii.gz", pred, _geometry(origin=(12.0, -5.0, 3.0)), is_label=True)
    with pytest.raises(NnsegError) as excinfo:
        evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
    message = str(excinfo.value)
    assert str(pred_dir / "case_b.nii.gz") in message and str(ref_dir / "case_b.nii.gz") in message
    assert "origin" in message


def test_shape_mismatch_names_both_files(folders):
    pred_dir, ref_dir, arrays = folders
    pred = arrays["case_c"][0][:, :, :-2]
    write_volume(pred_dir / "case_c.nii.gz", pred, _geometry(shape=pred.shape), is_label=True)
    with pytest.raises(NnsegError, match=r"case_c\.nii\.gz: shape .* differs from its reference .*case_c\.nii\.gz"):
        evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)


def test_non_integer_prediction_is_rejected(folders):
    pred_dir, ref_dir, arrays = folders
    soft = arrays["case_a"][0].astype(np.float32) * 0.5
    write_volume(pred_dir / "case_a.nii.gz", soft, _geometry())
    with pytest.raises(NnsegError, match=r"case_a\.nii\.gz: is not a label map"):
        evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)


def test_folder_and_argument_errors(folders, tmp_path):
    pred_dir, ref_dir, _ = folders
    with pytest.raises(NnsegError, match="reference folder not found"):
        evaluate_folders(pred_dir, tmp_path / "nope", show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NnsegError, match="no reference label maps"):
        evaluate_folders(pred_dir, tmp_path / "empty", show_progress=False)
    with pytest.raises(NnsegError, match="no foreground class"):
        evaluate_folders(pred_dir, ref_dir, {"background": 0}, show_progress=False)
    with pytest.raises(NnsegError, match="'bad'"):
        evaluate_folders(pred_dir, ref_dir, {"bad": "x"}, show_progress=False)
    with pytest.raises(NnsegError, match="tolerance"):
        evaluate_folders(pred_dir, ref_dir, LABELS, nsd_tolerance_mm=math.nan, show_progress=False)


def test_file_ending_filter_and_mixed_formats(folders):
    pred_dir, ref_dir, arrays = folders
    pred, _ = arrays["case_a"]
    (pred_dir / "case_a.nii.gz").unlink()
    write_volume(pred_dir / "case_a.mha", pred, _geometry(), is_label=True)  # same case, another format
    summary = evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
    assert summary.cases[0].prediction.endswith("case_a.mha")
    with pytest.raises(NnsegError, match="case_a"):
        evaluate_folders(pred_dir, ref_dir, LABELS, file_ending=".nii.gz", show_progress=False)
    write_volume(pred_dir / "case_a.nii.gz", pred, _geometry(), is_label=True)
    with pytest.raises(NnsegError, match="two prediction files"):
        evaluate_folders(pred_dir, ref_dir, LABELS, show_progress=False)
