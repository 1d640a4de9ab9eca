"""Largest-component postprocessing: the operation, the rule, nnU-Net's decision procedure and folder application."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.errors import NnsegError
from nnseg.io import Geometry, read_volume, write_volume
from nnseg.postprocessing import (
    PostprocessingRule,
    decide_postprocessing,
    keep_largest_component,
    largest_component_mask,
    postprocess_folder,
)
from nnseg.schema import SchemaError
from tests.helpers import tree_digest

SHAPE = (20, 24, 28)
SPACING = (2.0, 0.8, 0.8)


def _box(array: np.ndarray, value: int, start: tuple[int, ...], size: tuple[int, ...]) -> None:
    array[tuple(slice(s, s + n) for s, n in zip(start, size))] = value


def _blobs() -> np.ndarray:
    """Label 1: a big box and a small far box; label 2: a box touching the big one and a far single voxel."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    _box(labels, 1, (2, 2, 2), (8, 8, 8))
    _box(labels, 1, (16, 18, 22), (2, 2, 2))
    _box(labels, 2, (10, 4, 4), (2, 2, 2))  # touches the big box along axis 0
    labels[18, 2, 25] = 2
    return labels


# --- keep_largest_component ----------------------------------------------------------------------------------


def test_keeps_the_big_blob_and_removes_the_small_far_one() -> None:
    labels = _blobs()
    before = labels.copy()
    out = keep_largest_component(labels, 1)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert out.dtype == labels.dtype
    assert np.count_nonzero(out == 1) == 8**3
    assert not out[16:18, 18:20, 22:24].any()
    np.testing.assert_array_equal(out == 2, labels == 2)  # other labels untouched


def test_components_are_26_connected() -> None:
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    _box(labels, 3, (0, 0, 0), (2, 2, 2))
    labels[2, 2, 2] = 3  # touches the box only at a corner
    labels[5, 5, 0] = 3  # isolated
    out = keep_largest_component(labels, 3)
    assert out[2, 2, 2] == 3
    assert out[5, 5, 0] == 0
    assert np.count_nonzero(out) == 9


def test_region_values_are_one_mask() -> None:
    labels = _blobs()
    out = keep_largest_component(labels, (1, 2))
    assert np.count_nonzero(out == 1) == 8**3  # the small far label-1 box is gone
    assert np.count_nonzero(out == 2) == 8  # the touching label-2 box stays, the far voxel goes
    assert out[18, 2, 25] == 0
    only_two = keep_largest_component(labels, 2)
    assert only_two[18, 2, 25] == 0
    assert np.count_nonzero(only_two == 1) == np.count_nonzero(labels == 1)


def test_absent_values_and_empty_maps_are_unchanged() -> None:
    labels = _blobs()
    np.testing.assert_array_equal(keep_largest_component(labels, 7), labels)
    empty = np.zeros(SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(keep_largest_component(empty, 1), empty)
    assert largest_component_mask(empty != 0) is None


def test_largest_component_mask_returns_the_box() -> None:
    found = largest_component_mask(_blobs() == 1)
    assert found is not None
    component, box = found
    assert tuple((b.start, b.stop) for b in box) == ((2, 18), (2, 20), (2, 24))
    assert np.count_nonzero(component) == 8**3


# --- PostprocessingRule --------------------------------------------------------------------------------------


def test_rule_applies_foreground_then_classes() -> None:
    labels = _blobs()
    foreground = PostprocessingRule(foreground_largest_component=True).apply(labels)
    assert np.count_nonzero(foreground == 1) == 8**3 and np.count_nonzero(foreground == 2) == 8
    per_class = PostprocessingRule(class_largest_component=(2,)).apply(labels)
    assert np.count_nonzero(per_class == 1) == np.count_nonzero(labels == 1)
    assert per_class[18, 2, 25] == 0
    identity = PostprocessingRule()
    assert identity.is_identity
    np.testing.assert_array_equal(identity.apply(labels), labels)
    assert identity.apply(labels) is not labels


def test_rule_round_trips_through_json() -> None:
    rule = PostprocessingRule(True, (2, (3, 1), [4]))
    assert rule.class_largest_component == (2, (1, 3), 4)
    data = json.loads(json.dumps(rule.to_dict()))
    assert data == {"foreground_largest_component": True, "class_largest_component": [2, [1, 3], 4]}
    assert PostprocessingRule.from_dict(data) == rule
    assert "foreground" in rule.describe() and "region [1, 3]" in rule.describe()
    assert PostprocessingRule().describe() == "no postprocessing"


@pytest.mark.parametrize(
    "data",
    [
        {"foreground_largest_component": True},
        {"foreground_largest_component": "yes", "class_largest_component": []},
        {"foreground_largest_component": False, "class_largest_component": [1.5]},
        {"foreground_largest_component": False, "class_largest_component": [0]},
        {"foreground_largest_component": False, "class_largest_component": [], "extra": 1},
        [],
    ],
)
def test_rule_from_bad_dict_raises_schema_error(data: object) -> None:
    with pytest.raises(SchemaError):
        PostprocessingRule.from_dict(data)  # type: ignore[arg-type]


# --- decide_postprocessing -----------------------------------------------------------------------------------


def _reference(shift: int) -> np.ndarray:
    ref = np.zeros(SHAPE, dtype=np.uint8)
    _box(ref, 1, (3, 4 + shift, 4), (10, 10, 10))
    _box(ref, 2, (6, 7 + shift, 7), (3, 3, 3))
    return ref


def _with_specks(labels: np.ndarray, value: int, points: list[tuple[int, int, int]]) -> np.ndarray:
    out = labels.copy()
    for point in points:
        out[point] = value
    return out


def test_decide_picks_foreground_lcc_for_spurious_specks() -> None:
    cases = []
    for shift in range(3):
        ref = _reference(shift)
        pred = _with_specks(ref, 1, [(18, 20, 25), (18, 2, 25), (1, 22, 26)])
        pred = _with_specks(pred, 2, [(17, 21, 1)])
        pred[3, 4 + shift, 4:6] = 0  # a small real error that postprocessing cannot fix
        cases.append((pred, ref, SPACING))
    rule, report = decide_postprocessing(cases, {"background": 0, "organ": 1, "lesion": 2})
    assert rule == PostprocessingRule(foreground_largest_component=True)
    json.dumps(report)  # JSON-ready
    first = report["steps"][0]
    assert first["step"] == "foreground_largest_component" and first["accepted"]
    assert first["foreground_dice_after"] > first["foreground_dice_before"]
    assert [s["class"] for s in report["steps"][1:]] == ["organ", "lesion"]  # tested, but nothing left to gain
    assert not any(s["accepted"] for s in report["steps"][1:])
    assert report["postprocessed"]["foreground_dice"] > report["baseline"]["foreground_dice"]
    assert set(report["baseline"]["dice"]) == {"organ", "lesion"}
    assert report["rule"] == rule.to_dict()


def _two_kidneys() -> np.ndarray:
    ref = np.zeros(SHAPE, dtype=np.uint8)
    _box(ref, 1, (2, 2, 2), (10, 10, 10))
    _box(ref, 1, (15, 18, 22), (3, 3, 3))  # a true, small second component
    _box(ref, 2, (5, 5, 5), (2, 2, 2))
    return ref


def test_decide_keeps_a_true_second_component() -> None:
    cases = [(_two_kidneys(), _two_kidneys(), SPACING) for _ in range(2)]
    rule, report = decide_postprocessing(cases, {"kidney": 1, "tumour": 2})
    assert rule.is_identity
    assert report["steps"][0]["reason"] == "foreground Dice did not improve"


def test_decide_rejects_foreground_lcc_when_a_class_gets_worse_and_picks_the_class_step() -> None:
    cases = []
    for _ in range(2):
        ref = _two_kidneys()
        pred = _with_specks(
            ref, 2, [(0, 23, 0), (0, 23, 3), (0, 20, 0), (3, 23, 0), (19, 0, 0), (19, 0, 4), (19, 4, 0), (16, 0, 0)]
        )
        cases.append((pred, ref, SPACING))
    rule, report = decide_postprocessing(cases, {"kidney": 1, "tumour": 2})
    first = report["steps"][0]
    assert first["foreground_dice_after"] > first["foreground_dice_before"]  # better on average ...
    assert not first["accepted"] and "kidney" in first["reason"]  # ... but the kidney loses its second part
    assert rule == PostprocessingRule(False, (2,))
    assert report["postprocessed"]["dice"]["tumour"] == pytest.approx(1.0)
    assert report["postprocessed"]["dice"]["kidney"] == pytest.approx(1.0)


def test_decide_min_improvement_and_single_class() -> None:
    ref = _reference(0)
    pred = _with_specks(ref, 1, [(18, 20, 25)])
    cases = [(pred, ref, SPACING)]
    rule, report = decide_postprocessing(cases, {"organ": (1, 2)})
    assert rule.foreground_largest_component and len(report["steps"]) == 1  # one class: no per-class steps
    rule, _ = decide_postprocessing(cases, {"organ": (1, 2)}, min_improvement=0.5)
    assert rule.is_identity


def test_decide_handles_empty_maps() -> None:
    empty = np.zeros(SHAPE, dtype=np.uint8)
    rule, report = decide_postprocessing([(empty, empty, SPACING)], {"organ": 1})
    assert rule.is_identity and report["baseline"]["dice"] == {"organ": 1.0}


def test_decide_errors() -> None:
    ref = _reference(0)
    with pytest.raises(NnsegError, match="no cases"):
        decide_postprocessing([], {"organ": 1})
    with pytest.raises(NnsegError, match="no foreground class"):
        decide_postprocessing([(ref, ref, SPACING)], {"background": 0})
    with pytest.raises(NnsegError, match="case 0: prediction shape"):
        decide_postprocessing([(ref[:-1], ref, SPACING)], {"organ": 1})
    with pytest.raises(ValueError, match="min_improvement"):
        decide_postprocessing([(ref, ref, SPACING)], {"organ": 1}, min_improvement=-1)


# --- postprocess_folder --------------------------------------------------------------------------------------


def _oblique_geometry(shape: tuple[int, ...]) -> Geometry:
    angle = np.deg2rad(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag(SPACING[::-1])
    affine[:3, 3] = (12.5, -40.25, 7.125)
    return Geometry(affine=affine, shape=shape)


def _write_predictions(folder: Path) -> dict[str, np.ndarray]:
    geometry = _oblique_geometry(SHAPE)
    arrays = {"case_a.nii.gz": _blobs(), "case_b.mha": _with_specks(_reference(1), 1, [(18, 20, 25)])}
    for name, array in arrays.items():
        write_volume(folder / name, array, geometry, is_label=True)
    (folder / "plans.json").write_text("{}")
    (folder / ".hidden.nii.gz").write_bytes(b"not an image")
    return arrays


def test_postprocess_folder_keeps_geometry_and_inputs(tmp_path: Path) -> None:
    source, target = tmp_path / "pred", tmp_path / "pp"
    source.mkdir()
    arrays = _write_predictions(source)
    digest = tree_digest(source)
    rule = PostprocessingRule(foreground_largest_component=True)
    written = postprocess_folder(source, target, rule)
    assert [p.name for p in written] == sorted(arrays)
    assert tree_digest(source) == digest
    for name, array in arrays.items():
        original, result = read_volume(source / name), read_volume(target / name)
        np.testing.assert_allclose(result.geometry.affine, original.geometry.affine, atol=1e-5)
        np.testing.assert_array_equal(result.array, rule.apply(array))
    assert sorted(p.name for p in target.iterdir()) == sorted(arrays)


def test_postprocess_folder_refuses_to_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "pred"
    source.mkdir()
    _write_predictions(source)
    digest = tree_digest(source)
    rule = PostprocessingRule(True)
    for same in (source, source / ".", tmp_path / "pred" / ".." / "pred"):
        with pytest.raises(NnsegError, match="input folder"):
            postprocess_folder(same, same, rule)
        with pytest.raises(NnsegError, match="input folder"):
            postprocess_folder(source, same, rule)
    assert tree_digest(source) == digest
    target = tmp_path / "pp"
    postprocess_folder(source, target, rule, file_ending=".mha")
    assert [p.name for p in target.iterdir()] == ["case_b.mha"]
    with pytest.raises(NnsegError, match="exist already"):
        postprocess_folder(source, target, rule)
    assert postprocess_folder(source, target, rule, overwrite=True)


def test_postprocess_folder_input_errors(tmp_path: Path) -> None:
    rule = PostprocessingRule(True)
    with pytest.raises(NnsegError, match="not found"):
        postprocess_folder(tmp_path / "missing", tmp_path / "out", rule)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NnsegError, match="no label maps"):
        postprocess_folder(tmp_path / "empty", tmp_path / "out", rule)
    (tmp_path / "float").mkdir()
    write_volume(tmp_path / "float" / "x.nii.gz", np.full(SHAPE, 0.5, dtype=np.float32), _oblique_geometry(SHAPE))
    with pytest.raises(NnsegError, match="non-integer"):
        postprocess_folder(tmp_path / "float", tmp_path / "out", rule)
