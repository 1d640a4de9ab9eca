"""Volume I/O: geometry survives a prediction-style round trip in every supported format."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path as NIBABEL_DATA

from nnseg.errors import ImageReadError, NnsegError
from nnseg.io import Geometry, label_dtype_for, read_geometry, read_volume, split_suffix, write_volume
from tests.helpers import rotation

GEOMETRIES = {
    # voxel -> RAS: identity orientation, isotropic
    "ras_isotropic": (np.eye(3), (1.0, 1.0, 1.0)),
    # LPS-like axis order (i points left, j posterior), anisotropic
    "lps_anisotropic": (np.diag([-1.0, -1.0, 1.0]), (0.7, 0.8, 4.5)),
    # oblique rotation, anisotropic
    "oblique_anisotropic": (rotation(17.0), (0.9, 1.1, 3.0)),
    # oblique and LPS-like
    "oblique_lps": (np.diag([-1.0, -1.0, 1.0]) @ rotation(-23.0), (1.25, 1.25, 2.5)),
}
FORMATS = [".nii.gz", ".nii", ".mha", ".nrrd"]


def _geometry(name: str, shape=(12, 14, 16)) -> Geometry:
    direction, zooms = GEOMETRIES[name]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(zooms)
    affine[:3, 3] = [-93.25, 110.5, -42.125]
    return Geometry(affine=affine, shape=shape, qform_code=1, sform_code=1)


def _image(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100, 20, size=shape).astype(np.float32)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("geometry_name", list(GEOMETRIES))
def test_prediction_round_trip_keeps_geometry(tmp_path: Path, suffix: str, geometry_name: str) -> None:
    geometry = _geometry(geometry_name)
    image_path = write_volume(tmp_path / f"img{suffix}", _image(geometry.shape), geometry)
    image = read_volume(image_path)
    prediction = (image.array > 100).astype(np.int64)  # a "prediction" in the image's array order
    label_path = write_volume(tmp_path / f"pred{suffix}", prediction, image.geometry, is_label=True)
    reread = read_volume(label_path)
    np.testing.assert_allclose(reread.geometry.affine, image.geometry.affine, atol=1e-5)
    np.testing.assert_allclose(image.geometry.affine, geometry.affine, atol=1e-5)
    assert reread.array.shape == image.array.shape == geometry.shape
    assert reread.array.dtype == np.uint8
    np.testing.assert_array_equal(reread.array, prediction)
    np.testing.assert_allclose(reread.geometry.spacing, image.geometry.spacing, rtol=1e-6)


def test_array_order_is_reversed_file_order(tmp_path: Path) -> None:
    """array[k, j, i] is voxel (i, j, k) of the file, as SimpleITK (and nnU-Net) see it."""
    geometry = _geometry("oblique_anisotropic", shape=(5, 6, 7))
    data = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    write_volume(tmp_path / "a.nii.gz", data, geometry)
    nib_img = nib.load(str(tmp_path / "a.nii.gz"))
    assert nib_img.shape == (7, 6, 5)
    assert np.asarray(nib_img.dataobj)[3, 2, 1] == data[1, 2, 3]
    sitk_array = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")))
    np.testing.assert_array_equal(sitk_array, data)
    assert geometry.spacing == pytest.approx((3.0, 1.1, 0.9))


def test_nifti_and_itk_agree_on_world_coordinates(tmp_path: Path) -> None:
    geometry = _geometry("oblique_lps")
    data = _image(geometry.shape)
    write_volume(tmp_path / "a.nii.gz", data, geometry)
    write_volume(tmp_path / "a.mha", data, geometry)
    via_nib = read_volume(tmp_path / "a.nii.gz").geometry
    via_itk = read_volume(tmp_path / "a.mha").geometry
    np.testing.assert_allclose(via_nib.affine, via_itk.affine, atol=1e-5)
    # SimpleITK reading the NIfTI must place voxel (0,0,0) at the same LPS point
    itk_image = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    np.testing.assert_allclose(itk_image.GetOrigin(), via_nib.to_itk()[1], atol=1e-4)
    np.testing.assert_allclose(itk_image.GetDirection(), via_nib.to_itk()[2], atol=1e-5)


REAL_HEADERS = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "standard.nii.gz"]


@pytest.mark.parametrize("name", REAL_HEADERS)
def test_real_scanner_headers_round_trip(tmp_path: Path, name: str) -> None:
    source = Path(NIBABEL_DATA) / name
    original = nib.load(str(source))
    volume = read_volume(source)
    spatial = volume.array if volume.array.ndim == 3 else volume.array[0]
    labels = (spatial > np.median(spatial)).astype(np.uint8)
    out = write_volume(tmp_path / "pred.nii.gz", labels, volume.geometry, is_label=True)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    assert written.shape == original.shape[:3]
    assert np.issubdtype(written.get_data_dtype(), np.integer)
    assert int(written.header["qform_code"]) == int(original.header["qform_code"])
    assert int(written.header["sform_code"]) == int(original.header["sform_code"])
    if int(original.header["qform_code"]):
        np.testing.assert_allclose(written.get_qform(), original.get_qform(), atol=1e-5)


def test_multichannel_4d_nifti_is_channel_first(tmp_path: Path) -> None:
    volume = read_volume(Path(NIBABEL_DATA) / "example4d.nii.gz")
    original = nib.load(str(Path(NIBABEL_DATA) / "example4d.nii.gz"))
    assert volume.array.shape == tuple(reversed(original.shape))
    assert volume.geometry.shape == tuple(reversed(original.shape[:3]))
    geometry, channels = read_geometry(Path(NIBABEL_DATA) / "example4d.nii.gz")
    assert channels == original.shape[3]


def test_label_dtype_is_smallest_integer() -> None:
    assert label_dtype_for(np.array([0, 1, 255])) == np.uint8
    assert label_dtype_for(np.array([0, 256])) == np.uint16
    assert label_dtype_for(np.array([-1, 3])) == np.int32


def test_write_refuses_fractional_labels_and_wrong_shape(tmp_path: Path) -> None:
    geometry = _geometry("ras_isotropic")
    with pytest.raises(ValueError, match="non-integer"):
        write_volume(tmp_path / "x.nii.gz", np.full(geometry.shape, 0.5), geometry, is_label=True)
    with pytest.raises(ValueError, match="does not match geometry shape"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), geometry)
    assert not list(tmp_path.iterdir())


def test_write_is_atomic_and_can_refuse_overwrite(tmp_path: Path) -> None:
    geometry = _geometry("ras_isotropic")
    path = write_volume(tmp_path / "x.nii.gz", np.zeros(geometry.shape, np.uint8), geometry)
    with pytest.raises(NnsegError, match="refusing to overwrite"):
        write_volume(path, np.ones(geometry.shape, np.uint8), geometry, overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # no temp files left behind


def test_truncated_nifti_is_an_error_naming_the_file(tmp_path: Path) -> None:
    geometry = _geometry("ras_isotropic", shape=(30, 30, 30))
    path = write_volume(tmp_path / "big.nii.gz", _image(geometry.shape), geometry)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_nan_survives_reading(tmp_path: Path) -> None:
    geometry = _geometry("ras_isotropic")
    data = _image(geometry.shape)
    data[1, 2, 3] = np.nan
    path = write_volume(tmp_path / "nan.nii.gz", data, geometry)
    assert np.isnan(read_volume(path).array[1, 2, 3])


@pytest.mark.parametrize("shape", [(10, 12), (4, 5, 6, 2, 3)])
def test_2d_and_5d_files_are_refused(tmp_path: Path, shape) -> None:
    path = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    with pytest.raises(ImageReadError, match=rf"{len(shape)}D") as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_unknown_suffix_and_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="unsupported file type"):
        split_suffix(tmp_path / "x.png")
    with pytest.raises(ImageReadError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a nifti header" * 3))
    with pytest.raises(ImageReadError, match="garbage.nii.gz"):
        read_volume(garbage)
    garbage_mha = tmp_path / "garbage.mha"
    garbage_mha.write_text("not an image")
    with pytest.raises(ImageReadError, match="garbage.mha"):
        read_volume(garbage_mha)


def test_geometry_json_round_trip() -> None:
    geometry = _geometry("oblique_lps")
    again = Geometry.from_dict(geometry.to_dict())
    assert again.matches(geometry, atol_mm=0, rtol=0)
    assert again.qform_code == 1 and again.sform_code == 1


def test_geometry_rejects_singular_affine() -> None:
    with pytest.raises(ValueError, match="singular"):
        Geometry(affine=np.zeros((4, 4)), shape=(2, 2, 2))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("stored", [np.int16, np.uint8, np.float64])
def test_reading_with_a_dtype_equals_converting_after_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, stored
) -> None:
    monkeypatch.setattr("nnseg.io.images.READ_CHUNK_BYTES", 100)  # several slabs per file
    geometry = _geometry("oblique_lps")
    path = write_volume(tmp_path / f"x{suffix}", (_image(geometry.shape) * 3).astype(stored), geometry)
    expected = read_volume(path).array.astype(np.float32)
    volume = read_volume(path, dtype=np.float32)
    assert volume.array.dtype == np.float32 and volume.array.flags.c_contiguous
    np.testing.assert_array_equal(volume.array, expected)


def test_scaled_big_endian_4d_nifti_reads_as_nibabel_scales_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nnseg.io.images.READ_CHUNK_BYTES", 1000)
    data = (np.random.default_rng(1).normal(size=(9, 8, 7, 2)) * 300).astype(">i2")
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.37, -1024.5)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    expected = np.asanyarray(nib.load(str(tmp_path / "scaled.nii.gz")).dataobj).T.astype(np.float32)
    volume = read_volume(tmp_path / "scaled.nii.gz", dtype=np.float32)
    assert volume.array.shape == (2, 7, 8, 9)
    np.testing.assert_array_equal(volume.array, expected)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_short_nifti_read_with_a_dtype_is_an_error_naming_the_file(tmp_path: Path, suffix: str) -> None:
    geometry = _geometry("ras_isotropic", shape=(30, 30, 30))
    path = write_volume(tmp_path / f"big{suffix}", _image(geometry.shape), geometry)
    blob = gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes()
    blob = blob[:-1000]
    path.write_bytes(gzip.compress(blob) if suffix == ".nii.gz" else blob)
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_volume(path, dtype=np.float32)
    assert str(path) in str(info.value)


def test_nifti_is_written_from_a_transposed_view_byte_for_byte(tmp_path: Path) -> None:
    geometry = _geometry("oblique_anisotropic")
    array = (_image(geometry.shape) * 10).astype(np.int16)
    path = write_volume(tmp_path / "x.nii", array, geometry)
    contiguous = nib.Nifti1Image(np.ascontiguousarray(array.T), nib.load(str(path)).affine, nib.load(str(path)).header)
    nib.save(contiguous, str(tmp_path / "reference.nii"))
    assert path.read_bytes() == (tmp_path / "reference.nii").read_bytes()
