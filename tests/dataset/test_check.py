"""nnseg check: every problem class is found, named with its file, and the dataset is never touched."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnseg.cli import main
from nnseg.dataset import check_dataset, load_dataset
from nnseg.errors import DatasetError
from nnseg.io import read_volume, write_volume
from tests.dataset.test_spec import make_msd_copy
from tests.helpers import run_cli, tree_digest


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def _save_like(path: Path, data: np.ndarray, like: nib.Nifti1Image, affine: np.ndarray | None = None) -> None:
    image = nib.Nifti1Image(data, like.affine if affine is None else affine, like.header)
    image.set_data_dtype(data.dtype)
    nib.save(image, str(path))


def _edit_json(root: Path, **changes) -> None:
    raw = json.loads((root / "dataset.json").read_text())
    raw.update(changes)
    (root / "dataset.json").write_text(json.dumps(raw))


# Each corruption changes a fresh dataset copy and returns (kind, file named in the message).
def missing_label(root: Path) -> tuple[str, str]:
    (root / "labelsTr/case_001.nii.gz").unlink()
    return "missing_label", "labelsTr/case_001.nii.gz"


def label_without_image(root: Path) -> tuple[str, str]:
    shutil.copy(root / "labelsTr/case_001.nii.gz", root / "labelsTr/case_099.nii.gz")
    _edit_json(root, numTraining=5)
    return "label_without_image", "labelsTr/case_099.nii.gz"


def missing_channel(root: Path) -> tuple[str, str]:
    (root / "imagesTr/case_002_0001.nii.gz").unlink()
    return "missing_channel", "imagesTr/case_002_0001.nii.gz"


def channel_shape_mismatch(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_001_0001.nii.gz"
    image = _load(path)
    _save_like(path, np.asarray(image.dataobj)[:-2], image)
    return "shape_mismatch", "imagesTr/case_001_0001.nii.gz"


def label_shape_mismatch(root: Path) -> tuple[str, str]:
    path = root / "labelsTr/case_002.nii.gz"
    image = _load(path)
    _save_like(path, np.asarray(image.dataobj)[:, 1:], image)
    return "shape_mismatch", "labelsTr/case_002.nii.gz"


def spacing_mismatch(root: Path) -> tuple[str, str]:
    path = root / "labelsTr/case_000.nii.gz"
    image = _load(path)
    affine = image.affine.copy()
    affine[:3, 2] *= 1.05  # 5 % thicker slices
    _save_like(path, np.asarray(image.dataobj), image, affine)
    return "geometry_mismatch", "labelsTr/case_000.nii.gz"


def origin_mismatch(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_000_0001.nii.gz"
    image = _load(path)
    affine = image.affine.copy()
    affine[:3, 3] += [2.0, 0.0, 0.0]
    _save_like(path, np.asarray(image.dataobj), image, affine)
    return "geometry_mismatch", "imagesTr/case_000_0001.nii.gz"


def undeclared_label(root: Path) -> tuple[str, str]:
    path = root / "labelsTr/case_002.nii.gz"
    image = _load(path)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 7
    _save_like(path, data, image)
    return "undeclared_label", "labelsTr/case_002.nii.gz"


def non_integer_label(root: Path) -> tuple[str, str]:
    path = root / "labelsTr/case_001.nii.gz"
    image = _load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[data == 1] = 0.6
    _save_like(path, data, image)
    return "non_integer_label", "labelsTr/case_001.nii.gz"


def nan_in_image(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_000_0000.nii.gz"
    image = _load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[3, 4, 5] = np.nan
    _save_like(path, data, image)
    return "non_finite", "imagesTr/case_000_0000.nii.gz"


def inf_in_image(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_002_0001.nii.gz"
    image = _load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[1, 1, 1] = np.inf
    _save_like(path, data, image)
    return "non_finite", "imagesTr/case_002_0001.nii.gz"


def truncated_file(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_001_0000.nii.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return "unreadable", "imagesTr/case_001_0000.nii.gz"


def garbage_file(root: Path) -> tuple[str, str]:
    (root / "labelsTr/case_000.nii.gz").write_bytes(b"\x00garbage" * 50)
    return "unreadable", "labelsTr/case_000.nii.gz"


def two_d_image(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_000_0000.nii.gz"
    image = _load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 0], image.affine), str(path))
    return "unreadable", "imagesTr/case_000_0000.nii.gz"


def five_d_image(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_002_0000.nii.gz"
    image = _load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., None, None], image.affine), str(path))
    return "unreadable", "imagesTr/case_002_0000.nii.gz"


def four_d_channel_file(root: Path) -> tuple[str, str]:
    path = root / "imagesTr/case_001_0000.nii.gz"
    image = _load(path)
    nib.save(nib.Nifti1Image(np.stack([np.asarray(image.dataobj)] * 2, -1), image.affine), str(path))
    return "dimensionality", "imagesTr/case_001_0000.nii.gz"


def num_training_mismatch(root: Path) -> tuple[str, str]:
    _edit_json(root, numTraining=7)
    return "num_training", "dataset.json"


def empty_dataset(root: Path) -> tuple[str, str]:
    for path in list((root / "imagesTr").iterdir()) + list((root / "labelsTr").iterdir()):
        path.unlink()
    _edit_json(root, numTraining=0)
    return "empty_dataset", "imagesTr"


def duplicate_case_ids(root: Path) -> tuple[str, str]:
    for name in ("CASE_001_0000.nii.gz", "CASE_001_0001.nii.gz"):
        shutil.copy(root / "imagesTr" / name.lower(), root / "imagesTr" / name)
    shutil.copy(root / "labelsTr/case_001.nii.gz", root / "labelsTr/CASE_001.nii.gz")
    _edit_json(root, numTraining=4)
    return "duplicate_case", "imagesTr"


def extra_channel(root: Path) -> tuple[str, str]:
    shutil.copy(root / "imagesTr/case_000_0000.nii.gz", root / "imagesTr/case_000_0002.nii.gz")
    return "extra_channel", "imagesTr/case_000_0002.nii.gz"


def bad_file_name(root: Path) -> tuple[str, str]:
    shutil.copy(root / "imagesTr/case_000_0000.nii.gz", root / "imagesTr/case_000.nii.gz")
    return "bad_file_name", "imagesTr/case_000.nii.gz"


def background_missing(root: Path) -> tuple[str, str]:
    _edit_json(root, labels={"organ": 1, "lesion": 2})
    return "labels_declaration", "dataset.json"


def malformed_json(root: Path) -> tuple[str, str]:
    (root / "dataset.json").write_text('{"channel_names": ')
    return "dataset_json", "dataset.json"


CORRUPTIONS: list[Callable[[Path], tuple[str, str]]] = [
    missing_label,
    label_without_image,
    missing_channel,
    channel_shape_mismatch,
    label_shape_mismatch,
    spacing_mismatch,
    origin_mismatch,
    undeclared_label,
    non_integer_label,
    nan_in_image,
    inf_in_image,
    truncated_file,
    garbage_file,
    two_d_image,
    five_d_image,
    four_d_channel_file,
    num_training_mismatch,
    empty_dataset,
    duplicate_case_ids,
    extra_channel,
    bad_file_name,
    background_missing,
    malformed_json,
]


def test_clean_dataset_passes(mr_dataset_template: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_digest(mr_dataset_template)
    assert main(["check", str(mr_dataset_template)]) == 0
    assert "OK" in capsys.readouterr().out
    assert tree_digest(mr_dataset_template) == before


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_each_corruption_exits_2_naming_the_file(
    mr_dataset: Path, corrupt: Callable[[Path], tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    kind, file = corrupt(mr_dataset)
    before = tree_digest(mr_dataset)
    assert main(["check", str(mr_dataset), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert tree_digest(mr_dataset) == before, "check must never write into the dataset"
    matching = [p for p in report["problems"] if p["kind"] == kind and p["severity"] == "error"]
    assert matching, f"expected a {kind} error, got {report['problems']}"
    assert any(p["file"] == file for p in matching), f"expected the problem to name {file}: {matching}"
    # the human report names the file too
    assert main(["check", str(mr_dataset)]) == 2
    text = capsys.readouterr().out
    assert file in text and "FAILED" in text


def test_every_problem_is_listed_not_only_the_first(mr_dataset: Path) -> None:
    expected = {
        missing_label(mr_dataset),
        nan_in_image(mr_dataset),
        undeclared_label(mr_dataset),
        num_training_mismatch(mr_dataset),
    }
    report = check_dataset(mr_dataset, show_progress=False)
    found = {(p.kind, p.file) for p in report.errors}
    assert expected <= found


def test_binary_mask_saved_as_255_gets_a_hint(ct_dataset: Path) -> None:
    path = ct_dataset / "labelsTr/case_000.nii.gz"
    image = _load(path)
    data = (np.asarray(image.dataobj) > 0).astype(np.uint8) * 255
    _save_like(path, data, image)
    report = check_dataset(ct_dataset, show_progress=False)
    (problem,) = [p for p in report.errors if p.kind == "undeclared_label"]
    assert "0/255" in problem.message and problem.file == "labelsTr/case_000.nii.gz"


def test_empty_label_is_a_warning_only(ct_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ct_dataset / "labelsTr/case_003.nii.gz"
    image = _load(path)
    _save_like(path, np.zeros(image.shape, np.uint8), image)
    assert main(["check", str(ct_dataset)]) == 0
    out = capsys.readouterr().out
    assert "warning: labelsTr/case_003.nii.gz: label map is empty" in out


def test_parallel_workers_give_the_same_report(mr_dataset: Path) -> None:
    nan_in_image(mr_dataset)
    missing_label(mr_dataset)
    serial = check_dataset(mr_dataset, workers=1, show_progress=False)
    parallel = check_dataset(mr_dataset, workers=2, show_progress=False)
    assert serial.to_dict() == parallel.to_dict()


def test_msd_layout_clean_and_corrupted(mr_dataset_template: Path, tmp_path: Path) -> None:
    root = make_msd_copy(mr_dataset_template, tmp_path / "Task02_MR")
    assert check_dataset(root, show_progress=False).ok
    raw = json.loads((root / "dataset.json").read_text())
    raw["training"].append(dict(raw["training"][0]))
    raw["modality"]["2"] = "FLAIR"
    (root / "dataset.json").write_text(json.dumps(raw))
    report = check_dataset(root, show_progress=False)
    kinds = {(p.kind, p.file) for p in report.errors}
    assert ("duplicate_case", "dataset.json") in kinds
    assert ("channel_count", "imagesTr/case_000.nii.gz") in kinds


def test_report_raises_for_later_stages(mr_dataset: Path) -> None:
    missing_label(mr_dataset)
    report = check_dataset(load_dataset(mr_dataset), show_progress=False)
    with pytest.raises(DatasetError, match="labelsTr/case_001.nii.gz"):
        report.raise_if_errors()


def test_msd_paths_that_leave_the_dataset_are_refused(mr_dataset_template: Path, tmp_path: Path, capsys) -> None:
    root = make_msd_copy(mr_dataset_template, tmp_path / "Task02_MR")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    raw = json.loads((root / "dataset.json").read_text())
    first = raw["training"][0]
    shutil.copy(root / first["image"], outside / "x.nii.gz")
    raw["training"][0] = {"image": "../elsewhere/x.nii.gz", "label": first["label"]}
    raw["training"][1]["label"] = str((root / raw["training"][1]["label"]).resolve())  # absolute
    raw["test"] = ["../../etc/passwd"]
    (root / "dataset.json").write_text(json.dumps(raw))
    report = check_dataset(root, show_progress=False)
    outside_problems = [p for p in report.errors if p.kind == "outside_dataset"]
    assert [p.message.split(":")[0] for p in outside_problems] == ["training[0]", "training[1]", "test[0]"]
    assert "lies outside the dataset folder" in outside_problems[0].message
    code, output = run_cli(["check", root], capsys)
    assert code == 2 and "../elsewhere/x.nii.gz" in output


def test_a_case_labelled_all_ignore_is_warned_about(tmp_path: Path) -> None:
    from nnseg.synth import SynthConfig, generate_dataset

    root = generate_dataset(
        tmp_path / "raw",
        SynthConfig(num_cases=2, num_test=0, shape=(20, 24, 24), modality="MR", sparse=0.25, seed=3),
        show_progress=False,
    )
    ignore = json.loads((root / "dataset.json").read_text())["labels"]["ignore"]
    label = sorted((root / "labelsTr").glob("*.nii.gz"))[0]
    volume = read_volume(label)
    write_volume(label, np.full_like(volume.array, ignore), volume.geometry, is_label=True)
    report = check_dataset(root, show_progress=False)
    warned = [p for p in report.warnings if p.kind == "all_ignore"]
    assert report.ok and len(warned) == 1 and warned[0].file == f"labelsTr/{label.name}"
    assert f"every voxel is the ignore label ({ignore})" in warned[0].message
