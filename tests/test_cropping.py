"""Cropping: CT to the body's box, so that the air a scanner's field of view adds changes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

import nnseg
from nnseg.cropping import AIR_HU, BODY_MARGIN_MM, body_box, crop_to_body, crop_to_nonzero
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_images, read_case_labels
from nnseg.io import Geometry
from nnseg.preprocessing.preprocess import preprocess_case
from nnseg.preprocessing.restore import restore_labels


def _padded(images: np.ndarray, labels: np.ndarray, geometry: Geometry, pad: int, value: float):
    """``images``/``labels`` with ``pad`` voxels of ``value`` (labels: background) on every side, same spacing."""
    spatial = [(pad, pad)] * (images.ndim - 1)
    affine = geometry.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    padded = np.pad(images, [(0, 0), *spatial], constant_values=value)
    return padded, np.pad(labels, spatial), Geometry(affine, padded.shape[1:])


def test_body_box_is_the_voxels_above_air_widened_by_the_margin_in_mm() -> None:
    image = np.full((1, 40, 50, 60), -1000.0, dtype=np.float32)
    image[0, 10:20, 20:30, 30:35] = 40.0
    image[0, 5, 5, 5] = -700.0  # a lung-like voxel alone in the air is no body
    box = body_box(image, spacing=(2.0, 1.0, 4.0))
    assert box == ((5, 25), (10, 40), (27, 38))  # margins ceil(10 / spacing): 5, 10, 3 voxels
    assert body_box(image, spacing=(2.0, 1.0, 4.0), margin_mm=0) == ((10, 20), (20, 30), (30, 35))
    assert body_box(np.full((1, 4, 4, 4), -1000.0), spacing=(1, 1, 1)) == ((0, 4), (0, 4), (0, 4))
    assert AIR_HU == -500.0 and BODY_MARGIN_MM == 10.0


def test_a_label_in_the_air_keeps_its_voxel_inside_the_box() -> None:
    image = np.full((1, 30, 30, 30), -1000.0, dtype=np.float32)
    image[0, 12:18, 12:18, 12:18] = 50.0
    labels = np.zeros((30, 30, 30), dtype=np.int16)
    labels[13:15, 13:15, 13:15] = 1
    labels[1, 28, 2] = 2  # annotated outside the body: never cut away
    cropped, cropped_labels, mask, box = crop_to_nonzero(image, labels)
    cropped, cropped_labels, mask, box = crop_to_body(cropped, cropped_labels, mask, box, (5.0, 5.0, 5.0))
    assert box == ((1, 20), (10, 29), (2, 20))
    assert cropped.shape[1:] == cropped_labels.shape == mask.shape == (19, 19, 18)
    assert (cropped_labels == 2).sum() == 1 and (cropped_labels == 1).sum() == 8


def test_ct_preprocessing_does_not_depend_on_the_air_around_the_body(ct_dataset_template: Path, tmp_path: Path) -> None:
    """The same CT case with 20 or 40 voxels more air per side: identical network input, labels restored in place;
    MR keeps nnU-Net's nonzero crop (its zero padding is cropped, anything else is kept)."""
    plan = nnseg.plan(ct_dataset_template, tmp_path / "work", workers=1, show_progress=False).plan
    config = plan.configurations["3d_fullres"]
    assert config.is_ct
    dataset = load_dataset(ct_dataset_template)
    case = dataset.cases[0]
    images = read_case_images(case, dataset.num_channels)
    labels = read_case_labels(case).array
    results = []
    for pad in (20, 40):
        padded, padded_labels, geometry = _padded(images.array, labels, images.geometry, pad, -1000.0)
        result = preprocess_case(padded, geometry, padded_labels, plan, config, case_id=case.case_id)
        restored = restore_labels(result.seg, result.properties, plan, config.resampling)
        assert restored.shape == padded_labels.shape
        inner = tuple(slice(pad, -pad) for _ in range(3))
        assert (restored[inner] == labels).mean() > 0.99 and not restored[
            ~np.pad(np.ones_like(labels, bool), pad)
        ].any()
        results.append(result)
    assert results[0].data.shape == results[1].data.shape
    np.testing.assert_array_equal(results[0].data, results[1].data)
    np.testing.assert_array_equal(results[0].seg, results[1].seg)
    first, second = (np.array(r.properties.crop_box) for r in results)
    assert (second - first == 20).all()
    zscore = [replace(n, scheme="zscore") for n in config.normalization]
    assert not replace(config, normalization=zscore).is_ct
