"""DICOM-SEG output: a phantom label map on a small oblique CT series, written and read back."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from nnseg.errors import NnsegError  # noqa: E402
from nnseg.io.dicom_seg import (  # noqa: E402
    SEGMENTATION_STORAGE,
    read_dicom_seg_labels,
    sort_source_slices,
    write_dicom_seg,
)

SLICES, ROWS, COLUMNS = 5, 16, 20
LABELS = {"background": 0, "organ": 1, "lesion": 2}


def _orientation() -> tuple[np.ndarray, np.ndarray]:
    row = np.array([1.0, 0.3, 0.1])
    row /= np.linalg.norm(row)
    col = np.cross(np.array([0.2, -0.1, 1.0]), row)
    col /= np.linalg.norm(col)
    return row, col


def write_source_series(folder: Path, *, seed: int = 0) -> list[Path]:
    """A 5-slice oblique CT series, files written in shuffled order; returns the paths (k ascending)."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = _orientation()
    normal = np.cross(row, col)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    order = list(range(SLICES))
    random.Random(seed).shuffle(order)
    paths: dict[int, Path] = {}
    for number, k in enumerate(order, start=1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P1", "Phantom^Test", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, number
        position = np.array([-40.0, 25.0, 100.0]) + 2.5 * k * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *col)]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.5
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((ROWS, COLUMNS), 1000 + k, dtype=np.uint16).tobytes()
        path = folder / f"img_{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths[k] = path
    return [paths[k] for k in range(SLICES)]


def read_series(paths: list[Path], *, seed: int = 1) -> list[Dataset]:
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    return [pydicom.dcmread(p) for p in shuffled]


def phantom() -> np.ndarray:
    label_map = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint8)
    label_map[1:4, 3:12, 4:15] = 1  # organ
    label_map[2, 5:8, 6:9] = 2  # lesion inside the organ, on one slice only
    label_map[4, 0, 0] = 1  # corner voxel on the top slice: catches a flipped axis
    return label_map


@pytest.fixture()
def series(tmp_path: Path) -> tuple[list[Path], list[Dataset]]:
    paths = write_source_series(tmp_path / "ct")
    return paths, read_series(paths)


def test_sort_source_slices_follows_the_normal(series: tuple[list[Path], list[Dataset]]) -> None:
    paths, datasets = series
    expected = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    assert [ds.SOPInstanceUID for ds in sort_source_slices(datasets)] == expected


def test_write_and_read_back(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    _, datasets = series
    label_map = phantom()
    out = write_dicom_seg(label_map, datasets, LABELS, tmp_path / "seg" / "case.dcm", series_number=77)
    assert out == tmp_path / "seg" / "case.dcm"
    assert sorted(p.name for p in out.parent.iterdir()) == ["case.dcm"]  # no temporaries left

    raw = pydicom.dcmread(out)
    source = datasets[0]
    assert raw.SOPClassUID == SEGMENTATION_STORAGE
    assert raw.file_meta.MediaStorageSOPClassUID == SEGMENTATION_STORAGE
    assert raw.SegmentationType == "BINARY"
    assert raw.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert raw.StudyInstanceUID == source.StudyInstanceUID
    assert raw.SeriesInstanceUID != source.SeriesInstanceUID
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    assert [s.SegmentLabel for s in raw.SegmentSequence] == ["organ", "lesion"]
    assert [int(s.SegmentNumber) for s in raw.SegmentSequence] == [1, 2]
    assert raw.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert raw.SegmentSequence[0].SegmentAlgorithmName == "nnseg"
    assert int(raw.NumberOfFrames) == 2 * SLICES  # every (segment, slice) pair, empty or not
    assert (raw.Manufacturer, raw.ManufacturerModelName, raw.DeviceSerialNumber) == ("nnseg", "nnseg", "0")
    assert raw.SeriesDescription == "nnseg segmentation"
    assert int(raw.SeriesNumber) == 77

    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 2
    assert seg.get_segment_description(2).segment_label == "lesion"
    uids = [ds.SOPInstanceUID for ds in sort_source_slices(datasets)]
    numbers = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(numbers, label_map)  # segment numbers equal label values here

    labels, restored = read_dicom_seg_labels(out)
    assert labels == {"organ": 1, "lesion": 2}
    np.testing.assert_array_equal(restored, label_map)
    labels, restored = read_dicom_seg_labels(out, source_datasets=datasets)
    np.testing.assert_array_equal(restored, label_map)


def test_non_contiguous_values_and_empty_labels(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    _, datasets = series
    label_map = phantom() * 3  # organ 3, lesion 6
    labels = {"organ": 3, "lesion": 6, "tumour": 9}  # tumour has no voxels: still a segment
    out = write_dicom_seg(label_map.astype(np.int64), datasets, labels, tmp_path / "case.dcm")
    raw = pydicom.dcmread(out)
    assert [s.SegmentLabel for s in raw.SegmentSequence] == ["organ", "lesion", "tumour"]
    assert int(raw.NumberOfFrames) == 3 * SLICES
    assert int(raw.SeriesNumber) == 1003  # source series 3 + 1000
    read_labels, restored = read_dicom_seg_labels(out)
    assert read_labels == labels
    np.testing.assert_array_equal(restored, label_map)


def test_all_background(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    _, datasets = series
    label_map = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint8)
    out = write_dicom_seg(label_map, datasets, LABELS, tmp_path / "empty.dcm")
    raw = pydicom.dcmread(out)
    assert len(raw.SegmentSequence) == 2
    assert int(raw.NumberOfFrames) == 2 * SLICES
    labels, restored = read_dicom_seg_labels(out)
    assert labels == {"organ": 1, "lesion": 2}
    np.testing.assert_array_equal(restored, label_map)


def test_shape_mismatch_names_both_shapes(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    _, datasets = series
    bad = np.zeros((SLICES, COLUMNS, ROWS), dtype=np.uint8)  # rows and columns swapped
    with pytest.raises(NnsegError, match=r"\(5, 20, 16\).*\(5, 16, 20\)"):
        write_dicom_seg(bad, datasets, LABELS, tmp_path / "bad.dcm")
    assert not tmp_path.joinpath("bad.dcm").exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"organ": 1}, r"values \[2\]"),
        ({"organ": 1, "lesion": 1}, "share a value"),
        ({"background": 0}, "no non-background labels"),
        ({"organ": 1, "lesion": 2.0}, "must be an integer"),
        ({"organ": 1, "x" * 65: 2}, "1 to 64 characters"),
    ],
)
def test_label_errors(tmp_path: Path, series: tuple[list[Path], list[Dataset]], labels: dict, message: str) -> None:
    with pytest.raises(NnsegError, match=message):
        write_dicom_seg(phantom(), series[1], labels, tmp_path / "bad.dcm")


def test_failed_write_leaves_nothing(
    tmp_path: Path, series: tuple[list[Path], list[Dataset]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(self: Dataset, filename: Path, **kwargs: object) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", broken_save)
    out_dir = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(phantom(), series[1], LABELS, out_dir / "case.dcm")
    assert list(out_dir.iterdir()) == []


def test_omitted_empty_frames_need_the_source(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    """A SEG from another tool that drops empty frames: the grid comes from the source series."""
    _, datasets = series
    ordered = sort_source_slices(datasets)
    label_map = phantom()
    concept = hd.sr.CodedConcept("91723000", "SCT", "Anatomical structure")
    descriptions = [
        hd.seg.SegmentDescription(n, name, concept, concept, "MANUAL") for n, name in enumerate(("a", "b"), start=1)
    ]
    seg = hd.seg.Segmentation(
        ordered, label_map, "BINARY", descriptions, hd.UID(), 1, hd.UID(), 1, "x", "x", "1", "0", omit_empty_frames=True
    )
    path = tmp_path / "other.dcm"
    seg.save_as(path)
    with pytest.raises(NnsegError, match="pass source_datasets"):
        read_dicom_seg_labels(path)
    labels, restored = read_dicom_seg_labels(path, source_datasets=datasets)
    assert labels == {"a": 1, "b": 2}
    np.testing.assert_array_equal(restored, label_map)


def test_missing_highdicom_is_a_clear_error(
    tmp_path: Path, series: tuple[list[Path], list[Dataset]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(NnsegError, match=r"pip install nnseg\[dicom\]"):
        write_dicom_seg(phantom(), series[1], LABELS, tmp_path / "case.dcm")


def test_boolean_mask(tmp_path: Path, series: tuple[list[Path], list[Dataset]]) -> None:
    mask = phantom() > 0
    out = write_dicom_seg(mask, series[1], {"foreground": 1}, tmp_path / "mask.dcm")
    labels, restored = read_dicom_seg_labels(out)
    assert labels == {"foreground": 1}
    np.testing.assert_array_equal(restored, mask.astype(np.uint8))


@pytest.mark.parametrize("attribute", ["FrameOfReferenceUID", "PatientID"])
def test_incomplete_source_is_an_nnseg_error(
    tmp_path: Path, series: tuple[list[Path], list[Dataset]], attribute: str
) -> None:
    for ds in series[1]:
        del ds[attribute]
    with pytest.raises(NnsegError, match="cannot build a DICOM-SEG"):
        write_dicom_seg(phantom(), series[1], LABELS, tmp_path / "case.dcm")
    assert not tmp_path.joinpath("case.dcm").exists()
