"""Dataset: the nnU-Net v2 and MSD layouts give the same view of cases, channels and labels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnseg.dataset import load_dataset
from nnseg.errors import DatasetError
from nnseg.io import read_volume


def make_msd_copy(nnunet_root: Path, out: Path) -> Path:
    """Rewrite an nnU-Net-layout dataset in the MSD layout (4D images, index->name labels, training list)."""
    source = load_dataset(nnunet_root)
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    training = []
    for case in source.cases:
        channels = [nib.load(str(p)) for p in case.image_files]
        data = np.stack([np.asanyarray(c.dataobj) for c in channels], axis=-1)
        image = nib.Nifti1Image(data if data.shape[-1] > 1 else data[..., 0], channels[0].affine)
        nib.save(image, str(out / "imagesTr" / f"{case.case_id}.nii.gz"))
        label = nib.load(str(case.label_file))
        nib.save(label, str(out / "labelsTr" / f"{case.case_id}.nii.gz"))
        training.append({"image": f"./imagesTr/{case.case_id}.nii.gz", "label": f"./labelsTr/{case.case_id}.nii.gz"})
    dataset_json = {
        "name": "MSDStyle",
        "modality": {str(i): n for i, n in enumerate(source.channel_names)},
        "labels": {str(v): k for k, v in source.labels.items()},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(dataset_json))
    return out


def test_nnunet_layout(mr_dataset_template: Path) -> None:
    dataset = load_dataset(mr_dataset_template)
    assert dataset.layout == "nnunet"
    assert dataset.channel_names == ("T1", "T2")
    assert dataset.labels == {"background": 0, "organ": 1, "lesion": 2}
    assert dataset.label_values == [0, 1, 2]
    assert [c.case_id for c in dataset.cases] == ["case_000", "case_001", "case_002"]
    case = dataset.cases[1]
    assert [p.name for p in case.image_files] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert case.label_file is not None and case.label_file.name == "case_001.nii.gz"
    assert case.is_complete
    assert dataset.num_training == 3
    assert dataset.problems == ()


def test_msd_layout_gives_the_same_cases_labels_and_channels(mr_dataset_template: Path, tmp_path: Path) -> None:
    msd = load_dataset(make_msd_copy(mr_dataset_template, tmp_path / "Task01_MSD"))
    nnunet = load_dataset(mr_dataset_template)
    assert msd.layout == "msd"
    assert msd.channel_names == nnunet.channel_names
    assert msd.labels == nnunet.labels
    assert [c.case_id for c in msd.cases] == [c.case_id for c in nnunet.cases]
    assert all(c.channels_in_one_file and c.is_complete for c in msd.cases)
    image = read_volume(msd.cases[0].image_files[0])
    assert image.array.shape[0] == 2  # channels first
    np.testing.assert_array_equal(image.array[1], read_volume(nnunet.cases[0].image_files[1]).array)


def test_test_cases_are_listed(ct_dataset_template: Path) -> None:
    dataset = load_dataset(ct_dataset_template)
    assert [c.case_id for c in dataset.test_cases] == ["case_004"]
    assert dataset.test_cases[0].label_file is None


def test_regions_are_parsed(ct_dataset: Path) -> None:
    path = ct_dataset / "dataset.json"
    raw = json.loads(path.read_text())
    raw["labels"] = {"background": 0, "organ": 1, "lesion": 2, "whole": [1, 2]}
    path.write_text(json.dumps(raw))
    assert any("regions_class_order" in p.message for p in load_dataset(ct_dataset).problems)
    raw["regions_class_order"] = [1, 2, 1]
    path.write_text(json.dumps(raw))
    dataset = load_dataset(ct_dataset)
    assert dataset.problems == ()
    assert dataset.labels["whole"] == (1, 2)
    assert dataset.has_regions
    assert dataset.label_values == [0, 1, 2]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"labels": {"background": 0}, "file_ending": ".nii.gz"}', "channel_names"),
        ('{"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}', "labels"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": 0}}', "file_ending"),
        ('{"channel_names": {"1": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}', "keys must be 0"),
        (
            '{"channel_names": {"0": "CT"}, "labels": {"background": "zero"}, "file_ending": ".nii.gz"}',
            "must map to an integer",
        ),
    ],
)
def test_malformed_dataset_json_is_an_error_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=expected) as info:
        load_dataset(tmp_path)
    assert "dataset.json" in str(info.value)


def test_missing_folder_and_missing_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="dataset.json: missing"):
        load_dataset(tmp_path)
