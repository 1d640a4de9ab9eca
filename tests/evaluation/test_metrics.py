"""Metrics: hand-computed overlaps, MONAI agreement for HD95 and NSD, empty-mask conventions, regions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from nnseg.evaluation import (
    ClassMetrics,
    class_mask,
    compute_metrics,
    hausdorff_distance,
    mask_metrics,
    normalized_surface_dice,
    surface_distances,
)
from nnseg.labels import normalize_labels

SPACING = (2.0, 1.0, 0.5)  # array order (k, j, i), mm


def _cube(shape=(16, 16, 18), start=(2, 2, 2), size=(10, 10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def _sphere(shape, centre, radius_mm, spacing) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float64)
    squared = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return squared <= radius_mm**2


def _blob(seed: int, shape=(24, 28, 30), smooth=2.5) -> np.ndarray:
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), smooth)
    return noise > 0.02


def _onehot(mask: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(mask[None, None].astype(np.float32))


def _monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    metrics = pytest.importorskip("monai.metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metrics.compute_hausdorff_distance(
            _onehot(pred), _onehot(ref), include_background=True, percentile=95, spacing=list(spacing)
        )
    return float(value[0, 0])


def _monai_nsd(pred: np.ndarray, ref: np.ndarray, spacing, tolerance_mm: float) -> float:
    metrics = pytest.importorskip("monai.metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metrics.compute_surface_dice(
            _onehot(pred), _onehot(ref), [tolerance_mm], include_background=True, spacing=list(spacing)
        )
    return float(value[0, 0])


# --- overlap metrics, hand-computed ---------------------------------------------------------------------------


def test_two_cubes_known_overlap():
    ref = _cube()
    pred = _cube(start=(2, 2, 4))  # shifted 2 voxels along i: 10 x 10 x 8 voxels shared
    m = mask_metrics(pred, ref, SPACING)
    assert (m.tp, m.fp, m.fn) == (800, 200, 200)
    assert m.dice == pytest.approx(0.8, abs=1e-6)
    assert m.iou == pytest.approx(800 / 1200, abs=1e-6)
    assert m.volume_ref_ml == pytest.approx(1.0)  # 1000 voxels of 1 mm^3
    assert m.volume_pred_ml == pytest.approx(1.0)
    assert m.volume_diff_ml == pytest.approx(0.0) and m.volume_diff_rel == pytest.approx(0.0)
    assert not m.reference_empty and not m.prediction_empty


def test_volume_difference_sign_and_relative():
    ref = _cube()
    pred = _cube(size=(10, 10, 5))  # half the reference, inside it
    m = mask_metrics(pred, ref, SPACING)
    assert m.volume_diff_ml == pytest.approx(-0.5)
    assert m.volume_diff_rel == pytest.approx(-0.5)
    assert m.dice == pytest.approx(2 * 500 / 1500, abs=1e-6)


def test_cube_shift_hausdorff_is_the_shift_in_mm():
    # every surface voxel is within 2 voxels along i (0.5 mm each) of the other surface;
    # the far faces are exactly that far
    ref, pred = _cube(), _cube(start=(2, 2, 4))
    assert hausdorff_distance(pred, ref, SPACING, percentile=100) == pytest.approx(1.0, abs=1e-9)
    assert hausdorff_distance(pred, ref, SPACING) == pytest.approx(_monai_hd95(pred, ref, SPACING), abs=1e-3)
    # ties at exactly the tolerance count as within it
    assert normalized_surface_dice(pred, ref, SPACING, 1.0) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, ref, SPACING, 1.0) == pytest.approx(_monai_nsd(pred, ref, SPACING, 1.0))


def test_identical_masks_are_perfect():
    mask = _sphere((20, 30, 30), (10, 15, 15), 12.0, SPACING)
    m = mask_metrics(mask, mask, SPACING, nsd_tolerance_mm=0.0)
    assert (m.dice, m.iou, m.hd95_mm, m.nsd, m.fp, m.fn) == (1.0, 1.0, 0.0, 1.0, 0, 0)


# --- surface metrics against MONAI -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [(0, 0, 3), (1, 2, 0), (2, -1, 5)])
def test_offset_spheres_hd95_and_nsd_match_monai(offset):
    shape, spacing = (24, 40, 48), (2.5, 0.8, 0.6)
    centre = np.array([12.0, 20.0, 24.0])
    ref = _sphere(shape, centre, 14.0, spacing)
    pred = _sphere(shape, centre + offset, 13.0, spacing)
    assert hausdorff_distance(pred, ref, spacing) == pytest.approx(_monai_hd95(pred, ref, spacing), abs=1e-3)
    for tolerance in (0.5, 1.0, 2.0, 3.0):
        assert normalized_surface_dice(pred, ref, spacing, tolerance) == pytest.approx(
            _monai_nsd(pred, ref, spacing, tolerance), abs=1e-6
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_irregular_blobs_touching_the_border_match_monai(seed):
    # several components, surfaces on the array border, anisotropic spacing
    pred, ref = _blob(seed), _blob(seed + 100)
    spacing = (3.0, 0.7, 0.9)
    assert pred[0].any() or pred[-1].any()
    m = mask_metrics(pred, ref, spacing, nsd_tolerance_mm=1.5)
    assert m.hd95_mm == pytest.approx(_monai_hd95(pred, ref, spacing), abs=1e-3)
    assert m.nsd == pytest.approx(_monai_nsd(pred, ref, spacing, 1.5), abs=1e-6)


def test_hausdorff_is_symmetric_and_far_outlier_dominates_the_max():
    ref = _cube(shape=(16, 16, 40))
    pred = ref.copy()
    pred[5, 5, 38] = True  # one voxel 27 voxels (13.5 mm) beyond the cube's i=11 face
    assert hausdorff_distance(pred, ref, SPACING) == hausdorff_distance(ref, pred, SPACING)
    assert hausdorff_distance(pred, ref, SPACING, percentile=100) == pytest.approx(13.5)
    assert hausdorff_distance(pred, ref, SPACING) == pytest.approx(_monai_hd95(pred, ref, SPACING), abs=1e-3)


def test_surface_distances_are_directed():
    ref = _cube()
    pred = _cube(size=(10, 10, 5))  # i in 2..6, inside the reference; shares 5 of its faces
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, SPACING)
    assert pred_to_ref.size == np.count_nonzero(pred & ~ndimage.binary_erosion(pred))
    # pred's cut face i=6 is 4 voxels (0.5 mm each) from the reference face i=2; the rest lies on the reference surface
    assert pred_to_ref.max() == pytest.approx(2.0)
    assert np.count_nonzero(pred_to_ref) == 8 * 8
    # the reference face i=11 is 5 voxels from pred's face i=6
    assert ref_to_pred.max() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(np.zeros_like(ref), ref, SPACING)


# --- empty masks ------------------------------------------------------------------------------------------------


def test_both_empty():
    empty = np.zeros((8, 8, 8), dtype=bool)
    m = mask_metrics(empty, empty, SPACING)
    assert (m.dice, m.iou, m.nsd, m.hd95_mm, m.volume_diff_rel) == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert m.reference_empty and m.prediction_empty
    assert hausdorff_distance(empty, empty, SPACING) == 0.0
    assert normalized_surface_dice(empty, empty, SPACING, 1.0) == 1.0


def test_reference_empty_prediction_not():
    empty = np.zeros((16, 16, 18), dtype=bool)
    m = mask_metrics(_cube(), empty, SPACING)
    assert (m.dice, m.iou, m.nsd) == (0.0, 0.0, 0.0)
    assert math.isnan(m.hd95_mm) and math.isnan(m.volume_diff_rel)
    assert m.reference_empty and not m.prediction_empty
    assert (m.tp, m.fp, m.fn) == (0, 1000, 0)
    assert math.isnan(hausdorff_distance(_cube(), empty, SPACING))
    assert normalized_surface_dice(_cube(), empty, SPACING, 1.0) == 0.0


def test_prediction_empty_reference_not():
    empty = np.zeros((16, 16, 18), dtype=bool)
    m = mask_metrics(empty, _cube(), SPACING)
    assert (m.dice, m.iou, m.nsd, m.volume_diff_rel) == (0.0, 0.0, 0.0, -1.0)
    assert math.isnan(m.hd95_mm)
    assert m.prediction_empty and not m.reference_empty
    assert math.isnan(hausdorff_distance(empty, _cube(), SPACING))


# --- label maps and regions -------------------------------------------------------------------------------------


def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((16, 16, 18), dtype=np.uint8)
    ref[_cube()] = 1
    ref[_cube(start=(4, 4, 4), size=(4, 4, 4))] = 2  # core inside the whole
    pred = np.zeros_like(ref)
    pred[_cube(start=(2, 2, 4))] = 1
    pred[_cube(start=(4, 4, 6), size=(4, 4, 4))] = 2
    return pred, ref


def test_compute_metrics_plain_classes_and_regions():
    pred, ref = _label_maps()
    result = compute_metrics(pred, ref, SPACING, {"edema": 1, "core": 2, "whole": (1, 2), "absent": 7})
    assert list(result) == ["edema", "core", "whole", "absent"]
    assert all(isinstance(m, ClassMetrics) for m in result.values())
    whole = result["whole"]
    assert whole.dice == pytest.approx(0.8, abs=1e-6)  # the union is the shifted cube pair again
    assert whole == mask_metrics(pred > 0, ref > 0, SPACING)
    core = result["core"]
    assert (core.tp, core.fp, core.fn) == (32, 32, 32)
    assert core.dice == pytest.approx(0.5, abs=1e-6)
    assert result["absent"].reference_empty and result["absent"].dice == 1.0


def test_class_mask_and_label_normalization():
    pred, _ = _label_maps()
    assert np.array_equal(class_mask(pred, (1, 2)), pred > 0)
    assert np.array_equal(class_mask(pred, 2), pred == 2)
    assert normalize_labels({"a": 1, "b": [3, 2, 3], "c": np.int64(4)}) == {"a": (1,), "b": (2, 3), "c": (4,)}
    for bad in ({"a": ()}, {"a": True}, {"a": "1"}, {"a": (1, 2.5)}, {"": 1}):
        with pytest.raises(ValueError, match="labels"):
            normalize_labels(bad)


def test_input_checks():
    pred, ref = _label_maps()
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(pred[:-1], ref, SPACING, {"a": 1})
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(pred, ref, (1.0, 1.0), {"a": 1})
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(pred, ref, (1.0, 0.0, 1.0), {"a": 1})
    with pytest.raises(ValueError, match="tolerance"):
        compute_metrics(pred, ref, SPACING, {"a": 1}, nsd_tolerance_mm=-1.0)


# --- asking for some metrics only ------------------------------------------------------------------------------


def _no_surface_distances(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("surface distances were computed")

    monkeypatch.setattr("nnseg.evaluation.metrics.surface_distances", refuse)


def test_dice_only_computes_no_surface_distance(monkeypatch):
    pred, ref = _label_maps()
    labels = {"edema": 1, "core": 2, "whole": (1, 2), "absent": 7}
    full = compute_metrics(pred, ref, SPACING, labels)
    _no_surface_distances(monkeypatch)
    dice_only = compute_metrics(pred, ref, SPACING, labels, metrics=("dice",))
    for name, metrics in dice_only.items():
        assert metrics.dice == full[name].dice
        assert metrics.hd95_mm is None and metrics.nsd is None and metrics.tp is None and metrics.iou is None
        assert (metrics.reference_empty, metrics.prediction_empty) == (
            full[name].reference_empty,
            full[name].prediction_empty,
        )
        assert set(metrics.to_dict()) == {"dice", "reference_empty", "prediction_empty"}
    overlap = mask_metrics(pred == 2, ref == 2, SPACING, metrics=("iou", "tp", "volume_diff_rel"))
    assert (overlap.iou, overlap.tp, overlap.volume_diff_rel) == (full["core"].iou, 32, full["core"].volume_diff_rel)
    with pytest.raises(AssertionError, match="surface distances"):
        compute_metrics(pred, ref, SPACING, labels, metrics=("dice", "nsd"))


def test_surface_metrics_only_when_asked():
    pred, ref = _label_maps()
    full = compute_metrics(pred, ref, SPACING, {"core": 2})["core"]
    hd_only = compute_metrics(pred, ref, SPACING, {"core": 2}, metrics="hd95_mm")["core"]
    assert hd_only.hd95_mm == full.hd95_mm and hd_only.nsd is None and hd_only.dice is None
    empty = np.zeros_like(ref)
    nsd_only = mask_metrics(empty > 0, ref == 2, SPACING, metrics=["nsd"])
    assert nsd_only.nsd == 0.0 and nsd_only.hd95_mm is None  # empty-mask conventions hold for a subset too


def test_metric_names_are_checked():
    pred, ref = _label_maps()
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['hd95'\]"):
        compute_metrics(pred, ref, SPACING, {"a": 1}, metrics=("dice", "hd95"))
    with pytest.raises(ValueError, match="no metric"):
        compute_metrics(pred, ref, SPACING, {"a": 1}, metrics=())


def test_pseudo_dice_per_class_keeps_the_empty_mask_convention() -> None:
    from nnseg.evaluation.metrics import dice_from_counts, dice_per_class

    tp, fp, fn = np.array([[5, 0, 0]]), np.array([[1, 0, 3]]), np.array([[4, 0, 0]])
    scores = dice_per_class(tp, fp, fn)
    assert scores.shape == (1, 3)
    assert scores[0].tolist() == [dice_from_counts(5, 1, 4), 1.0, 0.0]  # an empty class is 1, as in metrics.json
