"""Dataset images given as DICOM series folders (``imagesTr/<case>_0000/``) in place of files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from nnseg.dataset import check_dataset, load_dataset
from nnseg.dataset.reading import read_case_images
from nnseg.io import read_volume
from nnseg.io.dicom import write_dicom_series


def test_series_folders_stand_for_channel_files(ct_dataset_template: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(ct_dataset_template, tmp_path / "ds"))
    originals = {}
    for nifti in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        volume = read_volume(nifti)
        originals[nifti.name.removesuffix("_0000.nii.gz")] = volume
        write_dicom_series(volume, root / "imagesTr" / nifti.name.removesuffix(".nii.gz"), modality="CT")
        nifti.unlink()
    dataset = load_dataset(root)
    assert all(case.image_files[0].is_dir() for case in dataset.cases)
    report = check_dataset(root, show_progress=False)
    assert report.ok, report.summary()
    for case in dataset.cases:
        images = read_case_images(case, 1)
        original = originals[case.case_id]
        np.testing.assert_allclose(images.geometry.affine, original.geometry.affine, atol=1e-4)
        np.testing.assert_array_equal(images.array[0], original.array.astype(np.float32))
