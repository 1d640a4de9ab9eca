"""nnseg check on region and ignore-label declarations; nnseg synth --regions / --sparse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.dataset import load_dataset
from nnseg.dataset.check import check_dataset
from nnseg.io import read_volume
from tests.helpers import run_cli

SYNTH = ["--cases", 2, "--test-cases", 1, "--shape", "20,24,24", "--seed", 5]


@pytest.fixture(scope="module")
def regions_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nnseg.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        num_cases=2, num_test=1, shape=(20, 24, 24), modality="MR", channels=4, regions=True, sparse=0.25, seed=5
    )
    return generate_dataset(tmp_path_factory.mktemp("regions") / "raw", config, show_progress=False)


def _edited(source: Path, tmp_path: Path, **changes: object) -> Path:
    import shutil

    target = tmp_path / "edited"
    shutil.copytree(source, target)
    data = json.loads((target / "dataset.json").read_text())
    data.update(changes)
    (target / "dataset.json").write_text(json.dumps(data))
    return target


def test_synth_regions_writes_a_brats_like_sparse_set(regions_dataset: Path) -> None:
    data = json.loads((regions_dataset / "dataset.json").read_text())
    assert list(data["channel_names"].values()) == ["T1", "T1ce", "T2", "FLAIR"]
    assert data["labels"]["whole_tumor"] == [1, 2, 3] and data["regions_class_order"] == [1, 2, 3]
    assert data["labels"]["ignore"] == 4
    train = read_volume(regions_dataset / "labelsTr" / "case_000.nii.gz").array
    annotated = [k for k in range(train.shape[0]) if not (train[k] == 4).all()]
    assert len(annotated) == round(0.25 * train.shape[0])  # whole slices along k, the rest is ignore
    test = read_volume(regions_dataset / "labelsTs" / "case_002.nii.gz").array
    assert 4 not in np.unique(test) and {1, 2, 3} <= set(np.unique(test).tolist())  # dense, nested
    assert check_dataset(regions_dataset, show_progress=False).ok


def test_check_reports_regions_that_do_not_reproduce_the_files(regions_dataset: Path, tmp_path: Path) -> None:
    # tumor_core (2, 3) painted last turns every enhancing voxel (3) into 2
    edited = _edited(regions_dataset, tmp_path, regions_class_order=[1, 3, 2])
    edited_json = json.loads((edited / "dataset.json").read_text())
    edited_json["labels"] = {
        "background": 0,
        "whole_tumor": [1, 2, 3],
        "enhancing": [3],
        "tumor_core": [2, 3],
        "ignore": 4,
    }
    (edited / "dataset.json").write_text(json.dumps(edited_json))
    report = check_dataset(edited, show_progress=False)
    kinds = {p.kind for p in report.errors}
    assert "regions_do_not_reproduce" in kinds
    assert any("label value(s) [3]" in p.message for p in report.errors)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"regions_class_order": None}, '"regions_class_order" is missing'),
        ({"regions_class_order": [1, 2, 9]}, "names value 9"),
        (
            {
                "labels": {
                    "background": 0,
                    "ignore": 1,
                    "whole_tumor": [2, 3, 4],
                    "tumor_core": [3, 4],
                    "enhancing": [4],
                }
            },
            'ignore" must have the highest value',
        ),
    ],
)
def test_check_refuses_bad_label_declarations(
    regions_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, message: str
) -> None:
    edited = _edited(regions_dataset, tmp_path, **changes)
    if changes.get("regions_class_order", 0) is None:
        data = json.loads((edited / "dataset.json").read_text())
        del data["regions_class_order"]
        (edited / "dataset.json").write_text(json.dumps(data))
    assert any(message in p.message for p in load_dataset(edited).problems)
    code, output = run_cli(["check", edited], capsys)
    assert code == 2 and message in output


def test_synth_sparse_keeps_a_fraction_of_the_slices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(["synth", tmp_path / "raw", "--sparse", 0.2, *SYNTH], capsys)
    assert code == 0, output
    data = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "organ": 1, "lesion": 2, "ignore": 3}
    labels = read_volume(tmp_path / "raw" / "labelsTr" / "case_000.nii.gz").array
    assert (labels == 3).any() and (labels != 3).any()
    code, output = run_cli(["synth", tmp_path / "bad", "--sparse", 1.5], capsys)
    assert code == 2 and "--sparse must be a fraction in (0, 1]" in output
