"""Every user mistake gets exit 2 and one message naming the file or option; nothing is silently wrong (issue 10).

Each test is named after what it guards; ``benchmarks/bad_input_probes.py`` prints the same probes as a table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from nnseg.errors import NnsegError
from tests.helpers import run_cli


def _raw(work: Path) -> Path:
    return Path(json.loads((work / "plans.json").read_text())["dataset_root"])


def _copy_work(work: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(work, tmp_path / "work"))


def _image_folder(work: Path, tmp_path: Path, change=None, name: str = "in") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    source = nib.load(_raw(work) / "imagesTs" / "case_006_0000.nii.gz")
    data = np.asarray(source.dataobj).astype(np.float32)
    affine = source.affine
    if change is not None:
        data, affine = change(data, affine.copy())
    nib.save(nib.Nifti1Image(data, affine), folder / "case_006_0000.nii.gz")
    return folder


def _predict(work: Path, inputs: Path, out: Path, *extra) -> list:
    return ["predict", "-i", inputs, "-o", out, "-m", work, "--device", "cpu", "--no-tta", *extra]


# ------------------------------------------------------------------------------------------ one bad value per option

BAD_OPTIONS = {
    "predict": [
        ("--step-size", "0"),
        ("--step-size", "-1"),
        ("--step-size", "2"),
        ("--step-size", "nan"),
        ("--step-size", "abc"),
        ("--window-batch", "0"),
        ("--window-batch", "-1"),
        ("--device", "foo"),
        ("--device", "cuda:x"),
        ("--folds", "-1"),
    ],
    "train": [
        ("--epochs", "0"),
        ("--epochs", "-5"),
        ("--fold", "-1"),
        ("--fold", "x"),
        ("--batch-size", "0"),
        ("--lr", "-1"),
        ("--lr", "0"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--max-hours", "0"),
        ("--max-hours", "-1"),
        ("--iters-per-epoch", "0"),
        ("--val-iters", "-1"),
        ("--device", "foo"),
        ("--loader-threads", "0"),
        ("--resume", None),
    ],
    "evaluate": [("--nsd-tolerance-mm", "0"), ("--nsd-tolerance-mm", "nan"), ("--workers", "0")],
    "check": [("--workers", "0")],
    "plan": [("--gpu-memory-gb", "0"), ("--gpu-memory-gb", "-8"), ("--gpu-memory-gb", "nan"), ("--workers", "0")],
    "preprocess": [("--workers", "0"), ("--workers", "two")],
    "synth": [("--cases", "0"), ("--test-cases", "-1"), ("--channels", "0"), ("--shape", "1,2")],
    "demo": [("--epochs", "0"), ("--device", "foo")],
}
REQUIRED = {
    "predict": ["-i", "in", "-o", "out", "-m", "model"],
    "train": ["--fresh"],  # with --resume: mutually exclusive
    "evaluate": ["--pred", "p", "--ref", "r"],
    "check": ["dataset"],
    "plan": ["dataset"],
    "preprocess": [],
    "synth": ["out"],
    "demo": [],
}


@pytest.mark.parametrize("command, option, value", [(c, o, v) for c, pairs in BAD_OPTIONS.items() for o, v in pairs])
def test_bad_option_values_exit_2_naming_the_option(
    command: str,
    option: str,
    value: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, and nothing is found by accident
    code, output = run_cli([command, *REQUIRED[command], option, *([value] if value is not None else [])], capsys)
    assert code == 2
    assert "Traceback" not in output
    assert option in output and "error" in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1  # one message, not a usage dump
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["ensemble", "-i", "only_one", "-o", "out"], "-i"),
        (["find-best", "--work", "nowhere"], "plans.json"),
        (["find-best", "--configs", "3d_nope"], "'3d_nope' is not in the plan"),
        (["find-best", "--configs", "3d_lowres"], "3d_lowres"),
        (["postprocess", "-i", "x", "-o", "out", "--work", "nowhere"], "inference.json"),
    ],
)
def test_the_other_subcommands_name_what_is_wrong(
    trained_work: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    work = _copy_work(trained_work, tmp_path)
    plan = json.loads((work / "plans.json").read_text())
    if "3d_lowres" in args:  # a configuration in the plan that was never trained
        plan["configurations"]["3d_lowres"] = dict(plan["configurations"]["3d_fullres"], name="3d_lowres")
        (work / "plans.json").write_text(json.dumps(plan))
    monkeypatch.chdir(tmp_path)
    if args[0] == "find-best" and "--work" not in args:
        args = [*args, "--work", str(work)]
    code, output = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in output
    assert expected in output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ silently wrong before


@pytest.mark.parametrize("where, expected", [("one", "1 of"), ("half", "of"), ("all", "of")])
def test_predict_refuses_non_finite_voxels_naming_the_file_and_count(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, expected: str
) -> None:
    def poison(data: np.ndarray, affine: np.ndarray):
        if where == "one":
            data[3, 4, 5] = np.nan
        elif where == "half":
            data[: data.shape[0] // 2] = np.inf
        else:
            data[:] = np.nan
        return data, affine

    out = tmp_path / "out"
    code, output = run_cli(_predict(trained_work, _image_folder(trained_work, tmp_path, poison), out), capsys)
    assert code == 2 and "Traceback" not in output
    assert "case_006_0000.nii.gz" in output and "NaN or infinite" in output and expected in output
    assert not list(out.glob("*.nii.gz"))


def test_evaluate_reads_the_dataset_json_it_is_given(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw(trained_work)
    predictions = tmp_path / "pred"
    assert run_cli(_predict(trained_work, raw / "imagesTs", predictions), capsys)[0] == 0
    custom = json.loads((raw / "dataset.json").read_text())
    custom["labels"] = {"background": 0, "liver": 1, "tumour": 2}
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "custom.json").write_text(json.dumps(custom))  # no dataset.json beside it
    code, output = run_cli(
        [
            "evaluate",
            "--pred",
            predictions,
            "--ref",
            raw / "labelsTs",
            "--dataset-json",
            tmp_path / "lab" / "custom.json",
            "--out",
            tmp_path / "eval",
        ],
        capsys,
    )
    assert code == 0, output
    assert set(json.loads((tmp_path / "eval" / "metrics.json").read_text())["labels"]) == {"liver", "tumour"}
    code, output = run_cli(
        [
            "evaluate",
            "--pred",
            predictions,
            "--ref",
            raw / "labelsTs",
            "--dataset-json",
            tmp_path / "lab" / "missing.json",
        ],
        capsys,
    )
    assert code == 2 and "missing.json: not found" in output


def test_ensemble_refuses_an_input_folder_as_output(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    for folder in (a, b):
        assert (
            run_cli(_predict(trained_work, _raw(trained_work) / "imagesTs", folder, "--save-probabilities"), capsys)[0]
            == 0
        )
    before = {p.name: p.read_bytes() for p in a.iterdir()}
    code, output = run_cli(["ensemble", "-i", a, b, "-o", a, "--overwrite"], capsys)
    assert code == 2 and "one of the input folders" in output
    assert {p.name: p.read_bytes() for p in a.iterdir()} == before


@pytest.mark.parametrize("change", ["width", "patch"])
def test_resume_after_the_plan_changed_is_refused_until_fresh(
    trained_work: Path, tmp_path: Path, change: str, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _copy_work(trained_work, tmp_path)
    plan = json.loads((work / "plans.json").read_text())
    config = plan["configurations"]["3d_fullres"]
    if change == "width":
        config["network"]["features_per_stage"] = [f * 2 for f in config["network"]["features_per_stage"]]
    else:
        config["patch_size"] = [p * 2 for p in config["patch_size"]]
    (work / "plans.json").write_text(json.dumps(plan))
    latest = work / "models" / "3d_fullres" / "fold_0" / "checkpoint_latest.pt"
    before = latest.read_bytes()
    args = [
        "train",
        "--work",
        work,
        "--epochs",
        2,
        "--iters-per-epoch",
        1,
        "--val-iters",
        1,
        "--device",
        "cpu",
        "--no-tracking",
        "--no-final-validation",
        "--loader-threads",
        1,
    ]
    code, output = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in output
    assert "changed since this fold was trained" in output and "--fresh" in output
    assert ("features_per_stage" if change == "width" else "patch_size") in output
    assert latest.read_bytes() == before
    assert run_cli([*args, "--fresh"], capsys)[0] == 0


@pytest.mark.parametrize("damage", ["truncate_data", "delete_seg", "truncate_locations"])
def test_preprocess_rerun_redoes_a_case_with_a_damaged_file(
    preprocessed_work: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = preprocessed_work / "preprocessed" / "cpu_3d_fullres"
    data, seg, locations = (cache / f"case_000{suffix}.npy" for suffix in ("", "_seg", "_locations"))
    intact = data.read_bytes()
    if damage == "truncate_data":
        data.write_bytes(intact[:-100])
    elif damage == "delete_seg":
        seg.unlink()
    else:
        locations.write_bytes(locations.read_bytes()[:60])
    code, output = run_cli(
        ["preprocess", "--work", preprocessed_work, "--config", "3d_fullres", "--workers", 1], capsys
    )
    assert code == 0 and "1 case(s) written" in output
    assert data.read_bytes() == intact and seg.is_file()


def test_training_refuses_a_damaged_cache_instead_of_crashing(
    preprocessed_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (preprocessed_work / "preprocessed" / "cpu_3d_fullres" / "case_001_seg.npy").unlink()
    code, output = run_cli(
        ["train", "--work", preprocessed_work, "--device", "cpu", "--no-tracking", "--epochs", 1], capsys
    )
    assert code == 2 and "case_001" in output and "nnseg preprocess" in output


def test_rerun_writes_the_outputs_a_case_still_lacks(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, out = _raw(trained_work) / "imagesTs", tmp_path / "out"
    assert run_cli(_predict(trained_work, images, out), capsys)[0] == 0
    code, output = run_cli(_predict(trained_work, images, out, "--save-probabilities", "--overlay"), capsys)
    assert code == 0 and "predicted 1 case(s)" in output
    assert (out / "case_006.npz").is_file() and (out / "case_006_overlay.png").is_file()
    code, output = run_cli(_predict(trained_work, images, out, "--save-probabilities"), capsys)
    assert "skipped 1 already predicted" in output


def test_a_diverging_training_stops_and_keeps_the_last_good_checkpoint(
    trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nnseg.checkpoint import Checkpoint
    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import Trainer, train

    work = _copy_work(trained_work, tmp_path)
    fold = work / "models" / "3d_fullres" / "fold_0"
    (fold / "checkpoint_final.pt").unlink()
    latest = fold / "checkpoint_latest.pt"
    good = latest.read_bytes()
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: float("nan"))
    config = TrainConfig(epochs=3, iters_per_epoch=2, val_iters=1, device="cpu", loader_threads=1, tracking=False)
    with pytest.raises(
        NnsegError,
        match="training diverged in epoch 1: the training loss is nan.*last good checkpoint.*epoch 0.*Lower --lr",
    ):
        train(work, config, show_progress=False)
    assert latest.read_bytes() == good and not (fold / "checkpoint_final.pt").exists()
    assert all(torch.isfinite(v).all() for v in Checkpoint.load(latest).network_state.values())


def test_nan_weights_are_never_saved(trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnseg.training.config import TrainConfig
    from nnseg.training.loop import Trainer, train

    work = _copy_work(trained_work, tmp_path)
    original = Trainer.train_step

    def poisoned(self, batch) -> float:
        loss = original(self, batch)
        with torch.no_grad():
            next(self.network.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(NnsegError, match="weights are no longer finite"):
        train(
            work,
            TrainConfig(epochs=1, iters_per_epoch=1, val_iters=0, device="cpu", loader_threads=1, tracking=False),
            resume=False,
            show_progress=False,
        )


def test_predict_names_each_checkpoint_and_warns_when_not_final(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _copy_work(trained_work, tmp_path)
    fold = work / "models" / "3d_fullres" / "fold_0"
    code, output = run_cli(_predict(work, _raw(work) / "imagesTs", tmp_path / "a"), capsys)
    assert code == 0 and "using 3d_fullres fold 0:" in output and "checkpoint_final.pt (finished" in output
    assert "warning" not in output
    (fold / "checkpoint_final.pt").unlink()
    (fold / "checkpoint_best.pt").unlink(missing_ok=True)
    code, output = run_cli(_predict(work, _raw(work) / "imagesTs", tmp_path / "b"), capsys)
    assert code == 0 and "checkpoint_latest.pt (UNFINISHED" in output
    assert "warning" in output and "not the final checkpoint" in output


def test_fold_all_is_not_averaged_with_the_cross_validation_folds(trained_work: Path, tmp_path: Path) -> None:
    from nnseg.inference.checkpoints import find_checkpoints

    work = _copy_work(trained_work, tmp_path)
    models = work / "models" / "3d_fullres"
    shutil.copytree(models / "fold_0", models / "fold_all")
    assert [p.parent.name for p in find_checkpoints(models)] == ["fold_0"]
    assert [p.parent.name for p in find_checkpoints(models, ["all", 0])] == ["fold_all", "fold_0"]
    shutil.rmtree(models / "fold_0")
    assert [p.parent.name for p in find_checkpoints(models)] == ["fold_all"]


def test_check_warns_about_a_constant_image(ct_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = sorted((ct_dataset / "imagesTr").glob("*_0000.nii.gz"))[1]
    source = nib.load(image)
    nib.save(nib.Nifti1Image(np.zeros(source.shape, np.int16), source.affine), image)
    code, output = run_cli(["check", ct_dataset], capsys)
    assert code == 0 and "constant image" in output and image.name in output and "carries no information" in output


# ------------------------------------------------------------------------------------------ unclear before


def test_missing_model_and_fold_folder_are_told_apart(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _raw(trained_work) / "imagesTs"
    code, output = run_cli(
        ["predict", "-i", images, "-o", tmp_path / "a", "-m", tmp_path / "nope", "--device", "cpu"], capsys
    )
    assert code == 2 and "nope: not found" in output
    fold = trained_work / "models" / "3d_fullres" / "fold_0"
    code, output = run_cli(
        ["predict", "-i", images, "-o", tmp_path / "b", "-m", fold, "--device", "cpu", "--no-tta"], capsys
    )
    assert code == 0 and (tmp_path / "b" / "case_006.nii.gz").is_file()
    code, output = run_cli(
        ["predict", "-i", images, "-o", tmp_path / "c", "-m", trained_work, "-c", "3d_lowres", "--device", "cpu"],
        capsys,
    )
    assert code == 2 and "no trained 3d_lowres model" in output


def test_evaluate_prints_its_warnings(trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(trained_work)
    predictions = tmp_path / "pred"
    assert run_cli(_predict(trained_work, raw / "imagesTs", predictions), capsys)[0] == 0
    shutil.copy(predictions / "case_006.nii.gz", predictions / "orphan.nii.gz")
    code, output = run_cli(["evaluate", "--pred", predictions, "--ref", raw / "labelsTs"], capsys)
    assert code == 0 and "warning" in output and "have no reference" in output


def test_an_input_far_from_the_training_spacing_is_announced(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def finer(data: np.ndarray, affine: np.ndarray):  # (coarser works the same, but upsampling is slow in a test)
        affine[:3, :3] /= 5.0
        return data, affine

    inputs = _image_folder(trained_work, tmp_path, finer)
    code, output = run_cli(_predict(trained_work, inputs, tmp_path / "out"), capsys)
    assert code == 0 and re.search(r"voxel size .* mm is up to [4-6]\.\dx off the model.s", output), output


# ------------------------------------------------------------------------------------------ tracebacks before


def test_predict_output_that_is_a_file_or_read_only(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _raw(trained_work) / "imagesTs"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, output = run_cli(_predict(trained_work, images, a_file), capsys)
    assert code == 2 and "-o" in output and "not a folder" in output
    read_only = Path("/sys/nnseg_out")  # read-only even for root
    code, output = run_cli(_predict(trained_work, images, read_only), capsys)
    assert code == 2 and "-o" in output and "cannot write" in output


def test_train_work_folder_that_is_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(["train", "--work", "/sys", "--no-tracking"], capsys)
    assert code == 2 and "--work" in output and "cannot write" in output


@pytest.mark.parametrize(
    "text, message",
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"configurations": ["3d_fullres"]}', "missing 'postprocessing'"),
        (
            '{"configurations": ["3d_fullres"], "postprocessing": {"foreground_largest_component": 1, '
            '"class_largest_component": []}}',
            "expected true or false",
        ),
    ],
)
@pytest.mark.parametrize("command", ["predict", "postprocess"])
def test_a_damaged_inference_json_is_named_with_its_fix(
    trained_work: Path, tmp_path: Path, text: str, message: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _copy_work(trained_work, tmp_path)
    (work / "inference.json").write_text(text)
    images = _raw(work) / "imagesTs"
    if command == "predict":
        args = _predict(work, images, tmp_path / "out")
    else:
        args = ["postprocess", "-i", images, "-o", tmp_path / "out", "--work", work]
    code, output = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in output
    assert "inference.json" in output and message in output and "find-best" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.update(patch_size=[4000, 4000, 4000]), "patch_size"),
        (
            lambda c: c["network"].update(features_per_stage=[-f for f in c["network"]["features_per_stage"]]),
            "features_per_stage",
        ),
        (lambda c: c.update(spacing=[float("nan")] * 3), "spacing"),
        (lambda c: c["normalization"][0].update(mean=float("inf")), "mean"),
    ],
)
def test_an_impossible_plan_is_refused_naming_the_field(
    trained_work: Path, tmp_path: Path, edit, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _copy_work(trained_work, tmp_path)
    plan = json.loads((work / "plans.json").read_text())
    edit(plan["configurations"]["3d_fullres"])
    (work / "plans.json").write_text(json.dumps(plan))
    for args in (
        ["train", "--work", work, "--fresh", "--no-tracking", "--device", "cpu"],
        ["preprocess", "--work", work, "--workers", 1],
    ):
        code, output = run_cli(args, capsys)
        assert code == 2 and "Traceback" not in output
        assert "plans.json" in output and "configurations.3d_fullres" in output and field in output


# ------------------------------------------------------------------------------------------ leftovers


def test_a_stage_removes_its_own_stale_temporaries_only(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".case_006.nii.gz.99999999.tmp.nii.gz"  # no such process: left by a kill -9
    alive = out / f".other.nii.gz.{os.getpid()}.tmp.nii.gz"  # a writer that is still running
    foreign = out / ".user_notes.tmp"
    for path in (dead, alive, foreign):
        path.write_bytes(b"half")
    assert run_cli(_predict(trained_work, _raw(trained_work) / "imagesTs", out), capsys)[0] == 0
    assert not dead.exists() and alive.exists() and foreign.exists()


# ------------------------------------------------------------------------------------------ security


class _Payload:
    marker = Path("/nonexistent")

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_its_payload_never_runs(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnseg.checkpoint import Checkpoint, CheckpointError

    marker = tmp_path / "PWNED"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "models" / "fold_0" / "checkpoint_final.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": 2, "network_state": {}, "x": payload}, path)
    with pytest.raises(CheckpointError, match="refused: the file holds pickled Python objects.*system"):
        Checkpoint.load(path)
    code, output = run_cli(
        ["predict", "-i", _raw(trained_work) / "imagesTs", "-o", tmp_path / "out", "-m", path, "--device", "cpu"],
        capsys,
    )
    assert code == 2 and "refused" in output
    assert not marker.exists()


def test_an_old_format_checkpoint_gets_a_clear_message(tmp_path: Path) -> None:
    from nnseg.checkpoint import Checkpoint, CheckpointError

    path = tmp_path / "checkpoint_final.pt"
    torch.save({"format": 1, "rng_state": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(CheckpointError, match="older nnseg .*format 1.*retrain"):
        Checkpoint.load(path)


def test_checkpoints_load_with_weights_only(trained_work: Path) -> None:
    for path in (trained_work / "models" / "3d_fullres" / "fold_0").glob("checkpoint_*.pt"):
        payload = torch.load(path, weights_only=True)  # raises if anything but plain data is inside
        assert payload["format"] == 2 and isinstance(payload["plan"], str)


def test_a_corrupt_compressed_dicom_slice_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):  # JPEG baseline slices whose compressed frames are garbage
        ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + b"\x00" * 64])
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.save_as(series / f"img{k}.dcm")
    from nnseg.errors import NnsegError
    from nnseg.io.dicom import read_dicom_series

    with pytest.raises(NnsegError) as caught:
        read_dicom_series(series)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{series / 'img0.dcm'}: the pixel data cannot be read")


def test_smaller_messages_name_the_file_or_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from nnseg.atomic import atomic_path
    from nnseg.checkpoint import Checkpoint, CheckpointError

    target = tmp_path / "out" / "case.nii.gz"
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises mid-write
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as refused:
        Checkpoint.load(text)
    assert "pickled" not in str(refused.value)

    code, output = run_cli(["train", "--work", tmp_path, "--time-budget", "-5m"], capsys)
    assert code == 2 and "--time-budget: must be a duration" in output and "expected one argument" not in output
