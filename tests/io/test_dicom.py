"""DICOM series: round trips keep values and geometry; what is not one regular grid is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from nnseg.errors import ImageReadError, NnsegError
from nnseg.io import Geometry, Volume, read_volume, write_volume
from nnseg.io.dicom import DicomSeriesError, is_dicom_folder, list_series, read_dicom_series, write_dicom_series
from tests.helpers import rotation

SHAPE = (6, 20, 24)


GEOMETRIES = {
    "axis_aligned": (np.eye(3), (0.8, 0.7, 2.5)),
    "oblique": (rotation(17.0), (0.9, 1.1, 3.0)),
    "lps_flipped": (np.diag([-1.0, -1.0, 1.0]), (0.7, 0.8, 4.5)),
    "oblique_lps": (np.diag([-1.0, -1.0, 1.0]) @ rotation(-23.0), (1.25, 1.25, 2.5)),
}


def _geometry(name: str, shape: tuple[int, ...] = SHAPE) -> Geometry:
    direction, zooms = GEOMETRIES[name]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(zooms)
    affine[:3, 3] = [-93.25, 110.5, -42.125]
    return Geometry(affine=affine, shape=shape)


def _ct(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 3000, size=shape).astype(np.int16)


def _world(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Voxel values sorted by their world position (rounded), to compare volumes whose slice order may differ."""
    k, j, i = np.indices(volume.array.shape).reshape(3, -1)
    ras = (volume.geometry.affine @ np.stack([i, j, k, np.ones_like(i)]))[:3].T.round(3)
    order = np.lexsort(ras.T[::-1])
    return ras[order], volume.array.reshape(-1)[order]


def _series(tmp_path: Path, name: str = "axis_aligned", **kwargs) -> tuple[Path, Volume]:
    volume = Volume(_ct(), _geometry(name))
    folder = tmp_path / "series"
    write_dicom_series(volume, folder, **kwargs)
    return folder, volume


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_ct_round_trip_matches_nifti_geometry(tmp_path: Path, name: str) -> None:
    folder, volume = _series(tmp_path, name)
    read = read_dicom_series(folder)
    nifti = read_volume(write_volume(tmp_path / "same.nii.gz", volume.array, volume.geometry))
    assert read.array.dtype == np.int16
    np.testing.assert_array_equal(read.array, volume.array)  # HU exact, slice order kept (right-handed)
    np.testing.assert_allclose(read.geometry.affine, nifti.geometry.affine, atol=1e-4)
    assert read.geometry.shape == volume.geometry.shape


def test_simpleitk_reads_the_written_series_with_the_same_geometry(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    folder, volume = _series(tmp_path, "oblique_lps")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    itk = Geometry.from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), SHAPE)
    np.testing.assert_allclose(read_dicom_series(folder).geometry.affine, itk.affine, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)


def test_left_handed_geometry_reads_back_same_voxels_at_same_positions(tmp_path: Path) -> None:
    geometry = _geometry("oblique")
    affine = geometry.affine.copy()
    affine[:3, 2] *= -1  # k runs against the slice normal: the reader sorts the slices the other way round
    volume = Volume(_ct(), Geometry(affine, SHAPE))
    write_dicom_series(volume, tmp_path / "s")
    read = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(read.array, volume.array[::-1])
    for got, want in zip(_world(read), _world(volume)):
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.linalg.det(read.geometry.direction_ras) > 0


def test_mr_float_values_within_tolerance_and_dtype(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(300.0, 80.0, size=SHAPE).astype(np.float32)
    volume = Volume(values, _geometry("oblique"))
    files = write_dicom_series(volume, tmp_path / "mr", modality="MR")
    assert len(files) == SHAPE[0]
    assert pydicom.dcmread(files[0]).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    read = read_dicom_series(tmp_path / "mr")
    assert read.array.dtype == np.float32
    np.testing.assert_allclose(read.array, values, rtol=0, atol=1e-3 * np.ptp(values))
    as_float = read_dicom_series(tmp_path / "mr", dtype=np.float64)
    assert as_float.array.dtype == np.float64
    ct_folder, ct = _series(tmp_path)
    np.testing.assert_array_equal(read_dicom_series(ct_folder, dtype=np.float32).array, ct.array.astype(np.float32))


def test_wide_integer_range_kept_exact(tmp_path: Path) -> None:
    values = np.random.default_rng(2).integers(0, 60000, size=SHAPE).astype(np.uint16)
    write_dicom_series(Volume(values, _geometry("axis_aligned")), tmp_path / "s", modality="MR")
    read = read_dicom_series(tmp_path / "s")
    assert read.array.dtype == np.float32
    np.testing.assert_array_equal(read.array, values)


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    folder, volume = _series(tmp_path, description="first")
    write_dicom_series(Volume(volume.array + 1, volume.geometry), folder, prefix="b_", description="second")
    infos = list_series(folder)
    assert [info.n_files for info in infos] == [SHAPE[0], SHAPE[0]]
    assert {info.description for info in infos} == {"first", "second"}
    with pytest.raises(DicomSeriesError, match="holds 2 DICOM series; pick one with --series UID") as err:
        read_dicom_series(folder)
    for info in infos:
        assert info.series_instance_uid in str(err.value)
    second = next(info for info in infos if info.description == "second")
    np.testing.assert_array_equal(
        read_dicom_series(folder, series_uid=second.series_instance_uid).array, volume.array + 1
    )
    with pytest.raises(DicomSeriesError, match="has no series 1.2.3") as err:
        read_dicom_series(folder, series_uid="1.2.3")
    assert second.series_instance_uid in str(err.value)


def _edit(files: list[Path], index: int, **values) -> None:
    ds = pydicom.dcmread(files[index])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(files[index])


def _position(files: list[Path], index: int) -> list[float]:
    return [float(v) for v in pydicom.dcmread(files[index]).ImagePositionPatient]


def test_refuses_non_uniform_spacing(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    files = sorted(folder.iterdir())
    x, y, z = _position(files, 5)
    _edit(files, 5, ImagePositionPatient=[x, y, z + 1.0])
    with pytest.raises(DicomSeriesError, match=r"non-uniform slice spacing: .* from 2.5 to 3.5 mm"):
        read_dicom_series(folder)


def test_refuses_missing_slice(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    (folder / "slice_0003.dcm").unlink()
    with pytest.raises(DicomSeriesError, match=r"1 slice\(s\) missing: .*slice_0002.dcm -> slice_0004.dcm: 5 mm"):
        read_dicom_series(folder)


def test_refuses_gantry_tilt(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    files = sorted(folder.iterdir())
    for index in range(len(files)):
        x, y, z = _position(files, index)
        _edit(files, index, ImagePositionPatient=[x, y + 0.4 * index, z], GantryDetectorTilt=9.1)
    with pytest.raises(DicomSeriesError, match=r"sheared \(gantry tilt\?\).*0.4 mm in-plane.*GantryDetectorTilt"):
        read_dicom_series(folder)


def test_refuses_mixed_orientation(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    files = sorted(folder.iterdir())
    _edit(files, 2, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(DicomSeriesError, match="mixed slice orientations: .*slice_0003.dcm"):
        read_dicom_series(folder)


def test_refuses_duplicate_position(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    files = sorted(folder.iterdir())
    _edit(files, 3, ImagePositionPatient=_position(files, 2))
    with pytest.raises(DicomSeriesError, match="slice_0003.dcm and slice_0004.dcm sit at the same position"):
        read_dicom_series(folder)


def test_refuses_differing_sizes_and_multi_frame(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    files = sorted(folder.iterdir())
    _edit(files, 1, NumberOfFrames=2)
    with pytest.raises(DicomSeriesError, match="multi-frame .*single-frame"):
        read_dicom_series(folder)
    _edit(files, 1, NumberOfFrames=1, Rows=10)
    with pytest.raises(DicomSeriesError, match="slices differ in size .*10x24, 20x24"):
        read_dicom_series(folder)


def test_non_image_objects_are_ignored(tmp_path: Path) -> None:
    folder, volume = _series(tmp_path)
    other = pydicom.dcmread(sorted(folder.iterdir())[0])
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(other, keyword)
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    other.save_as(folder / "REPORT")  # no suffix: found by its DICM preamble
    (folder / "notes.txt").write_text("not DICOM")
    assert len(list_series(folder)) == 1
    np.testing.assert_array_equal(read_dicom_series(folder).array, volume.array)


def test_is_dicom_folder(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path)
    assert is_dicom_folder(folder)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert is_dicom_folder(plain)
    (plain / "IM0001").unlink()
    (plain / "a.txt").write_text("hello")
    write_volume(plain / "a.nii.gz", _ct(), _geometry("axis_aligned"))
    assert not is_dicom_folder(plain)
    assert not is_dicom_folder(tmp_path / "missing")
    assert not is_dicom_folder(folder / "slice_0001.dcm")


def test_folder_errors_are_image_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not a folder"):
        read_dicom_series(tmp_path / "missing")
    with pytest.raises(NnsegError, match="holds no DICOM image files"):
        read_dicom_series(tmp_path)


def test_real_scanner_single_slice_is_refused(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "real"
    folder.mkdir()
    shutil.copy(source, folder / "CT_small.dcm")
    (info,) = list_series(folder)
    assert info.modality == "CT" and info.n_files == 1
    with pytest.raises(DicomSeriesError, match="CT_small.dcm: the series has a single slice; a 3D volume needs"):
        read_dicom_series(folder)


def test_written_series_is_a_highdicom_source(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    folder, volume = _series(tmp_path, "oblique")
    sources = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    mask = volume.array > 1000
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="bright",
                segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
                segmented_property_type=hd.sr.CodedConcept("12738006", "SCT", "Brain"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="nnseg",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    assert seg.NumberOfFrames >= 1


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    volume = Volume(_ct(), _geometry("axis_aligned"))
    with pytest.raises(NnsegError, match="modality"):
        write_dicom_series(volume, tmp_path / "a", modality="PT")
    write_dicom_series(volume, tmp_path / "a")
    with pytest.raises(NnsegError, match="exists already"):
        write_dicom_series(volume, tmp_path / "a")
    nan = Volume(np.full(SHAPE, np.nan, dtype=np.float32), volume.geometry)
    with pytest.raises(NnsegError, match="NaN"):
        write_dicom_series(nan, tmp_path / "b")
