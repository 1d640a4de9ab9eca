"""Resampling: shapes, label safety, separate handling of a coarse axis, crop round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnseg.cropping import bounding_box, crop_to_nonzero, nonzero_mask, uncrop
from nnseg.planning.plan import ResamplingPlan
from nnseg.preprocessing import resample as resample_module
from nnseg.preprocessing.resample import (
    interpolate_linear,
    new_shape_for,
    resample_image,
    resample_labels,
    resampled_argmax,
    separate_axis,
)


def test_new_shape_rounds_physical_size() -> None:
    assert new_shape_for((10, 20, 30), (3.0, 1.0, 1.0), (1.5, 0.5, 2.0)) == (20, 40, 15)


def test_separate_axis_decision() -> None:
    plan = ResamplingPlan()
    assert separate_axis((4.0, 0.8, 0.8), (3.0, 0.8, 0.8), plan) == 0
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), plan) == 2  # from the target spacing
    assert separate_axis((1.0, 1.0, 1.0), (1.2, 1.0, 1.0), plan) is None
    assert separate_axis((4.0, 4.0, 0.8), (4.0, 4.0, 0.8), plan) is None  # two coarse axes: no single one
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), ResamplingPlan(force_separate_axis=True)) == 0


def test_image_resampling_preserves_constant_and_smooth_signals() -> None:
    image = np.full((1, 10, 12, 14), 7.0, np.float32)
    out = resample_image(image, (15, 6, 20), order=3, axis=None)
    assert out.shape == (1, 15, 6, 20) and np.allclose(out, 7.0)
    ramp = np.broadcast_to(np.linspace(0, 1, 40, dtype=np.float32), (1, 8, 8, 40)).copy()
    up = resample_image(ramp, (8, 8, 80), order=3, axis=None)
    assert np.abs(np.diff(up[0, 4, 4])).max() < 0.03  # smooth, no ringing steps


def test_separate_axis_uses_nearest_along_the_coarse_axis() -> None:
    image = np.zeros((1, 4, 8, 8), np.float32)
    image[0, 1] = 1.0  # one bright slice
    out = resample_image(image, (8, 8, 8), order=3, axis=0)
    assert set(np.unique(out.round(5))) <= {0.0, 1.0}  # slices copied, never blended


def test_labels_never_get_invented_values() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice([-1, 0, 2, 5], size=(12, 12, 12)).astype(np.int16)
    for axis in (None, 0):
        out = resample_labels(labels, (17, 9, 20), axis=axis)
        assert set(np.unique(out)) <= {-1, 0, 2, 5}
        assert out.dtype == labels.dtype and out.shape == (17, 9, 20)


def test_label_round_trip_keeps_a_sphere() -> None:
    grid = np.mgrid[:40, :40, :40]
    sphere = (np.linalg.norm(grid - 20, axis=0) < 12).astype(np.int16)
    down = resample_labels(sphere, (27, 27, 27), axis=None)
    back = resample_labels(down, (40, 40, 40), axis=None)
    dice = 2 * (back & sphere).sum() / (back.sum() + sphere.sum())
    assert dice > 0.97


def test_probabilities_keep_their_sum() -> None:
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], size=(6, 7, 8)).transpose(3, 0, 1, 2).astype(np.float32)
    out = interpolate_linear(torch.from_numpy(probs), (9, 5, 12), None)
    assert out.shape == (3, 9, 5, 12)
    np.testing.assert_allclose(out.sum(0).numpy(), 1.0, atol=1e-5)


def test_crop_and_uncrop() -> None:
    images = np.zeros((2, 10, 12, 14), np.float32)
    images[0, 2:8, 3:9, 4:10] = 1
    images[1, 5, 5, 12] = 3  # channel 2 extends the box
    images[0, 4, 5, 6] = 0  # a hole inside the body stays inside the mask
    labels = np.zeros((10, 12, 14), np.int16)
    labels[3:5, 4:6, 5:7] = 1
    mask = nonzero_mask(images)
    assert mask[4, 5, 6]
    assert bounding_box(mask) == ((2, 8), (3, 9), (4, 13))
    cropped, cropped_labels, inside, box = crop_to_nonzero(images, labels)
    assert cropped.shape == (2, 6, 6, 9)
    assert cropped_labels.min() == -1 and (cropped_labels == 1).sum() == 8
    np.testing.assert_array_equal(uncrop(cropped, box, (10, 12, 14)), images)


@pytest.mark.parametrize("shape", [(5, 6, 7), (1, 6, 7)])
def test_identity_resampling_is_a_copy(shape) -> None:
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    out = resample_image(image, shape, order=3, axis=None)
    np.testing.assert_array_equal(out, image)
    assert out is not image


# ------------------------------------------------------------------------------- the memory-lean paths (issue 10)


def _reference_argmax(scores: torch.Tensor, new_shape: tuple[int, ...], axis: int | None) -> torch.Tensor:
    """Resample every map at once with F.interpolate, then argmax (first maximum): the naive, memory-hungry way."""
    return interpolate_linear(scores.float(), new_shape, axis).argmax(0)


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
@pytest.mark.parametrize(
    "source, target", [((7, 9, 11), (23, 30, 13)), ((40, 31, 29), (9, 12, 10)), ((12, 8, 30), (12, 17, 7))]
)
def test_slab_wise_argmax_equals_resampling_everything_at_once(
    monkeypatch: pytest.MonkeyPatch, axis, source, target
) -> None:
    monkeypatch.setattr(resample_module, "SLAB_VOXELS", 64)  # many slabs, each reading a few source slices
    probabilities = torch.from_numpy(
        np.random.default_rng(3).dirichlet([1, 1, 1, 1], size=source).astype(np.float32)
    ).permute(3, 0, 1, 2)
    expected = _reference_argmax(probabilities, target, axis)
    labels = resampled_argmax([(v, probabilities[v]) for v in range(4)], target, axis=axis, dtype=torch.uint8)
    assert labels.dtype == torch.uint8
    torch.testing.assert_close(labels.long(), expected, rtol=0, atol=0)
    label_map = np.random.default_rng(4).choice(np.array([-1, 0, 3, 7], np.int16), size=source)
    label_map[: source[0] // 2] = 3  # large uniform regions: interpolated masks tie at their borders
    one_hot = torch.from_numpy(np.stack([label_map == v for v in (-1, 0, 3, 7)])).float()
    expected_labels = np.array([-1, 0, 3, 7], np.int16)[_reference_argmax(one_hot, target, axis).numpy()]
    np.testing.assert_array_equal(resample_labels(label_map, target, axis=axis), expected_labels)


def test_large_channels_are_zoomed_in_float32_like_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resample_module, "LEAN_SPLINE_VOXELS", 0)  # every channel takes the large-volume path
    rng = np.random.default_rng(5)
    image = ndimage.gaussian_filter(rng.normal(size=(2, 30, 26, 34)), 1.5).astype(np.float32) * 500
    view = image.transpose(0, 2, 3, 1)[:, 3:-2]  # a cropped, transposed view, as preprocessing passes it
    before = image.copy()
    out = resample_image(view, (9, 40, 12), order=3, axis=None, prepare=lambda c, channel: channel.__imul__(c + 2))
    np.testing.assert_array_equal(image, before)  # the caller's array is never changed
    for c in range(2):
        expected = ndimage.zoom(
            view[c] * np.float32(c + 2),
            [n / o for n, o in zip((9, 40, 12), view.shape[1:])],
            order=3,
            mode="nearest",
            grid_mode=True,
        )
        assert out.dtype == np.float32 and out[c].shape == expected.shape
        np.testing.assert_allclose(out[c], expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_edge_padding_matches_numpy() -> None:
    volume = np.random.default_rng(6).normal(size=(4, 5, 6)).astype(np.float32)
    padded = np.zeros([n + 6 for n in volume.shape], np.float32)
    padded[3:-3, 3:-3, 3:-3] = volume
    resample_module._fill_edge_padding(padded, 3)
    np.testing.assert_array_equal(padded, np.pad(volume, 3, mode="edge"))


def test_nonzero_mask_fills_holes_like_scipy_for_any_layout() -> None:
    rng = np.random.default_rng(7)
    images = np.zeros((2, 20, 24, 22), np.float32)
    images[0, 2:18, 3:20, 2:19] = rng.normal(size=(16, 17, 17))
    images[0][ndimage.binary_erosion(images[0] != 0, iterations=3) & (rng.random((20, 24, 22)) < 0.3)] = 0  # holes
    images[1, 5, 22, 20] = 1.0  # the second channel reaches outside the first's box
    view = images.transpose(0, 3, 1, 2)
    expected = ndimage.binary_fill_holes(np.any(view != 0, axis=0))
    np.testing.assert_array_equal(nonzero_mask(view), expected)
    assert expected.sum() > (np.any(view != 0, axis=0)).sum()  # there were holes to fill
