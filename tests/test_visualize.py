"""Overlay PNGs: written atomically, sensible crossing point and window, empty maps, anisotropy, files on disk."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnseg.errors import NnsegError
from nnseg.io import Geometry, read_volume, write_volume
from nnseg.synth import SynthConfig, make_case
from nnseg.visualize import (
    _extents,
    _to_closest_ras,
    crossing_point,
    intensity_window,
    label_colour,
    overlay_case,
    overlay_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def phantom():
    return make_case(SynthConfig(shape=(24, 28, 28), seed=7), np.random.default_rng(7))


def _png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    return imread(path).shape


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_overlay_writes_a_png(phantom, tmp_path: Path) -> None:
    out = overlay_png(
        phantom.images[0],
        phantom.labels,
        phantom.geometry.spacing,
        tmp_path / "sub" / "a.png",
        title="case",
        label_names={1: "organ", 2: "lesion"},
    )
    assert out == tmp_path / "sub" / "a.png"
    _assert_png(out)
    height, width = _png_shape(out)[:2]
    assert width > 2 * height  # three panels side by side


def test_overlay_of_an_empty_label_map(phantom, tmp_path: Path) -> None:
    out = overlay_png(phantom.images[0], np.zeros_like(phantom.labels), phantom.geometry.spacing, tmp_path / "e.png")
    _assert_png(out)


def test_overlay_follows_physical_aspect(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(10, 40, 40)).astype(np.float32)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[3:7, 10:30, 10:30] = 1
    thin = overlay_png(image, labels, (1.0, 1.0, 1.0), tmp_path / "thin.png")
    thick = overlay_png(image, labels, (8.0, 1.0, 1.0), tmp_path / "thick.png")
    _assert_png(thick)
    # 10 slices of 8 mm are 80 mm tall, twice the 40 mm axial panel: the figure is taller for the same width
    assert _png_shape(thick)[0] > 1.4 * _png_shape(thin)[0]
    assert _png_shape(thick)[1] == pytest.approx(_png_shape(thin)[1], rel=0.1)
    assert _extents((10, 20, 40), (8.0, 0.5, 1.0)) == [(0, 40, 0, 10), (0, 40, 0, 80), (0, 10, 0, 80)]


def test_overlay_rejects_bad_inputs(tmp_path: Path) -> None:
    image = np.zeros((4, 5, 6))
    with pytest.raises(ValueError, match="differs"):
        overlay_png(image, np.zeros((4, 5, 5), dtype=np.uint8), (1, 1, 1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="3D"):
        overlay_png(image[0], np.zeros((5, 6), dtype=np.uint8), (1, 1, 1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="spacing"):
        overlay_png(image, np.zeros_like(image, dtype=np.uint8), (1, 0, 1), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_crossing_point() -> None:
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    assert crossing_point(labels) == (10, 10, 10)
    labels[2:9, 3:10, 4:11] = 1
    labels[15, 15, 15] = 2  # smaller structure: ignored
    assert crossing_point(labels) == (5, 6, 7)
    ring = np.zeros((5, 21, 21), dtype=np.uint8)
    jj, ii = np.mgrid[:21, :21]
    ring[:, (np.hypot(jj - 10, ii - 10) >= 6) & (np.hypot(jj - 10, ii - 10) <= 8)] = 1
    point = crossing_point(ring)
    assert ring[point] == 1  # centre of mass lies in the hole: snapped onto the ring


def test_intensity_window_is_robust() -> None:
    image = np.random.default_rng(1).uniform(0, 100, size=(20, 20, 20))
    image[0, 0, :5] = 1e6
    image[1, 1, 1] = np.nan
    low, high = intensity_window(image)
    assert 0 <= low < 5 and 95 < high <= 100
    assert intensity_window(np.full((4, 4, 4), 7.0)) == (6.5, 7.5)


def test_label_colours_are_distinct_for_common_labels() -> None:
    colours = {label_colour(v) for v in range(1, 11)}
    assert len(colours) == 10


def test_to_closest_ras_matches_nibabel(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (k, j, i)
    affine = np.array([[0.0, 0.0, -2.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 1.5, 0.0, -3.0], [0, 0, 0, 1.0]])
    turned, spacing = _to_closest_ras(data, Geometry(affine=affine, shape=data.shape))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.ascontiguousarray(data.T), affine))
    np.testing.assert_array_equal(turned, np.asarray(canonical.dataobj).T)
    np.testing.assert_allclose(spacing, canonical.header.get_zooms()[::-1])


def test_overlay_case_reads_files(phantom, tmp_path: Path) -> None:
    two_channels = np.stack([phantom.images[0], phantom.images[0]]).astype(np.float32)
    geometry = phantom.geometry
    image_path = write_volume(tmp_path / "img.nii.gz", two_channels[0], geometry)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(two_channels.T), geometry.affine), str(tmp_path / "img4d.nii.gz"))
    label_path = write_volume(tmp_path / "lab.mha", phantom.labels, geometry, is_label=True)
    assert read_volume(tmp_path / "img4d.nii.gz").array.ndim == 4
    out_dir = tmp_path / "png"
    _assert_png(overlay_case(image_path, label_path, out_dir / "a.png", label_names={1: "organ"}))
    _assert_png(overlay_case(tmp_path / "img4d.nii.gz", label_path, out_dir / "b.png", title=""))
    other = write_volume(
        tmp_path / "other.nii.gz", phantom.labels[:-1], geometry.with_shape(phantom.labels[:-1].shape), is_label=True
    )
    with pytest.raises(NnsegError, match="voxel grid differs"):
        overlay_case(image_path, other, out_dir / "c.png")
