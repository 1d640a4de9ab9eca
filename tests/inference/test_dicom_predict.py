"""DICOM in, DICOM-SEG out: phantom -> DICOM series -> nnseg predict -> label map in the phantom's geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.cli import main
from nnseg.io import read_volume
from nnseg.io.dicom import write_dicom_series

pytest.importorskip("highdicom")


def _raw_cases(work: Path) -> list[Path]:
    root = Path(json.loads((work / "plans.json").read_text())["dataset_root"])
    return sorted((root / "imagesTr").glob("*_0000.nii.gz"))


def _as_dicom(nifti: Path, folder: Path) -> Path:
    write_dicom_series(read_volume(nifti), folder, modality="CT")
    return folder


def test_dicom_series_predicts_in_the_phantoms_geometry(trained_work: Path, tmp_path: Path) -> None:
    cases = _raw_cases(trained_work)
    series = tmp_path / "series"
    for nifti in cases[:3]:
        _as_dicom(nifti, series / nifti.name.removesuffix("_0000.nii.gz"))
    assert main(["predict", "-i", str(series), "-o", str(tmp_path / "from_dicom"), "-m", str(trained_work)]) == 0
    nifti_inputs = tmp_path / "nifti"
    nifti_inputs.mkdir()
    for nifti in cases[:3]:
        (nifti_inputs / nifti.name).symlink_to(nifti)
    assert main(["predict", "-i", str(nifti_inputs), "-o", str(tmp_path / "from_nifti"), "-m", str(trained_work)]) == 0
    same_affine = 0
    for nifti in cases[:3]:
        name = nifti.name.replace("_0000", "")
        from_dicom, from_nifti = (
            read_volume(tmp_path / "from_dicom" / name),
            read_volume(tmp_path / "from_nifti" / name),
        )
        phantom = read_volume(nifti).geometry.affine
        if np.allclose(from_dicom.geometry.affine, phantom, atol=1e-4):
            same_affine += 1
            np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
        else:  # a left-handed phantom: DICOM stacks are sorted along row x column, so k runs the other way
            flip = np.diag([1.0, 1.0, -1.0, 1.0])
            flip[2, 3] = from_dicom.array.shape[0] - 1
            np.testing.assert_allclose(from_dicom.geometry.affine @ flip, phantom, atol=1e-4)
            np.testing.assert_array_equal(from_dicom.array[::-1], from_nifti.array)
    assert same_affine >= 1


def test_dicom_seg_output_reads_back_with_its_segments(trained_work: Path, tmp_path: Path) -> None:
    import highdicom
    import pydicom

    from nnseg.io.dicom_seg import read_dicom_seg_labels

    nifti = _raw_cases(trained_work)[0]
    series = _as_dicom(nifti, tmp_path / "case_a")
    out = tmp_path / "seg"
    args = ["predict", "-i", str(series), "-o", str(out), "-m", str(trained_work), "--output-format", "dicom-seg"]
    assert main(args) == 0
    target = out / "case_a.dcm"
    seg = highdicom.seg.segread(target)
    assert [s.segment_label for s in seg.SegmentSequence] == ["organ", "lesion"]
    slices = len(list(series.glob("*.dcm")))
    assert int(pydicom.dcmread(target).NumberOfFrames) == 2 * slices  # every (segment, slice) frame is stored
    source = pydicom.dcmread(next(series.glob("*.dcm")))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    labels, label_map = read_dicom_seg_labels(target)
    assert labels == {"organ": 1, "lesion": 2}
    nifti_out = tmp_path / "nii"
    assert main(["predict", "-i", str(series), "-o", str(nifti_out), "-m", str(trained_work)]) == 0
    np.testing.assert_array_equal(label_map, read_volume(nifti_out / "case_a.nii.gz").array)


def test_dicom_seg_needs_dicom_input(trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nifti = _raw_cases(trained_work)[0]
    args = ["predict", "-i", str(nifti), "-o", str(tmp_path / "o"), "-m", str(trained_work)]
    assert main([*args, "--output-format", "dicom-seg"]) == 2
    assert "--output-format dicom-seg needs DICOM series as input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--output-format", "png"])
    assert exit_info.value.code == 2


def test_a_folder_with_two_series_asks_for_one(trained_work: Path, tmp_path: Path, capsys) -> None:
    import pydicom

    first, second = _raw_cases(trained_work)[:2]
    folder = tmp_path / "mixed"
    write_dicom_series(read_volume(first), folder, modality="CT", prefix="a_")
    write_dicom_series(read_volume(second), folder, modality="CT", prefix="b_")
    args = ["predict", "-i", str(folder), "-o", str(tmp_path / "o"), "-m", str(trained_work)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds 2 DICOM series; pick one with --series UID" in err
    uid = str(pydicom.dcmread(next(folder.glob("b_*.dcm"))).SeriesInstanceUID)
    assert main([*args, "--series", uid]) == 0
    assert read_volume(tmp_path / "o" / "mixed.nii.gz").array.shape == read_volume(second).array.shape
