"""nnseg export --format openvino --int8: NNCF quantization calibrated on the fold's training patches, Dice-checked
on its validation cases; refused (nothing written) when the Dice drops too much, unless forced."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.cli import main
from nnseg.deploy.quantize import calibration_patches, fold_cases
from nnseg.inference.exported import Manifest
from tests.helpers import run_cli

pytest.importorskip("openvino")
pytest.importorskip("nncf")

#: few patches keep the tests fast; the tiny fixture has 4 training cases in fold 0
INT8 = ["--int8", "--calibration-patches", "4"]


@pytest.fixture(scope="module")
def int8_export(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """fold 0 of 3d_fullres as an int8 OpenVINO export, forced past an impossible Dice limit, and the command's
    output (read-only)."""
    out = tmp_path_factory.mktemp("int8") / "export"
    args = ["export", "-m", trained_work, "-f", "0", "--format", "openvino", *INT8, "--max-dice-drop", "-1"]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main([str(a) for a in [*args, "--force", "-o", out]])
    assert code == 0, output.getvalue()
    return out, output.getvalue()


def test_int8_manifest_records_calibration_and_dice(int8_export: tuple[Path, str], trained_work: Path) -> None:
    folder, output = int8_export
    assert "int8 mean Dice" in output and "calibrated on 4 patches" in output
    manifest = Manifest.load(folder)
    assert manifest.format == "openvino" and manifest.precision == "int8"
    (entry,) = manifest.folds
    assert (folder / entry.file).is_file() and (folder / entry.file).with_suffix(".bin").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["fold_0.bin", "fold_0.xml", "manifest.json"]
    q = entry.quantization
    assert q is not None
    _, train, val = fold_cases(trained_work, 0)
    assert q["calibration"]["patches"] == 4 and q["calibration"]["seed"] == 0
    assert set(q["calibration"]["cases"]) <= set(train)
    assert q["validation_cases"] == val
    classes = {name for name, value in manifest.labels.items() if value != 0}
    for name in ("fp32", "int8", "change"):
        assert set(q["dice"][name]["per_class"]) == classes
    change = q["dice"]["change"]
    assert change["mean"] == pytest.approx(q["dice"]["int8"]["mean"] - q["dice"]["fp32"]["mean"], nan_ok=True)
    assert q["overflow_fix"] == "enable" and q["max_dice_drop"] == -1 and q["forced"] is True
    # the int8 IR holds quantization nodes
    assert "FakeQuantize" in (folder / entry.file).read_text() or "FakeConvert" in (folder / entry.file).read_text()


def test_calibration_is_deterministic_and_from_training_cases(trained_work: Path) -> None:
    from nnseg.planning.plan import Plan

    plan = Plan.load(trained_work / "plans.json")
    _, train, _ = fold_cases(trained_work, 0)
    ids, patches = calibration_patches(trained_work, plan, "3d_fullres", train, 6, seed=3)
    again_ids, again = calibration_patches(trained_work, plan, "3d_fullres", train, 6, seed=3)
    assert ids == again_ids and np.array_equal(patches, again)
    assert patches.shape == (6, 1, *plan.configuration("3d_fullres").patch_size)
    assert set(ids) <= set(train)


def test_predict_with_an_int8_export(
    int8_export: tuple[Path, str], trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = int8_export
    raw = Path(json.loads((trained_work / "plans.json").read_text())["dataset_root"])
    code, output = run_cli(["predict", "-m", folder, "-i", raw / "imagesTs", "-o", tmp_path, "--device", "cpu"], capsys)
    assert code == 0, output
    assert list(tmp_path.glob("*.nii.gz"))


def test_a_dice_drop_above_the_limit_refuses_and_writes_nothing(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(``int8_export`` is the same command with --force: written, with a warning.)"""
    out = tmp_path / "export"
    args = ["export", "-m", trained_work, "-f", "0", "--format", "openvino", *INT8, "--max-dice-drop", "-1"]
    code, output = run_cli([*args, "-o", out], capsys)
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "fold 0: the int8 model's mean Dice" in lines[0] and "--max-dice-drop -1" in lines[0]
    assert "nothing was exported" in lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no scratch folder left behind


def test_force_writes_with_a_warning(int8_export: tuple[Path, str]) -> None:
    folder, output = int8_export
    warning = [line for line in output.splitlines() if line.startswith("nnseg: warning: fold 0: the int8 model")]
    assert len(warning) == 1 and "--max-dice-drop -1" in warning[0] and "written anyway (--force)" in warning[0]
    assert Manifest.load(folder).precision == "int8"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--int8"], "--int8 applies to --format openvino only, not --format onnx"),
        (["--format", "onnx", "--int8"], "--int8 applies to --format openvino only"),
        (["--format", "openvino", "--force"], "--force: only with --int8 or --bf16"),
        (["--format", "openvino", "--max-dice-drop", "0.1"], "--max-dice-drop: only with --int8 or --bf16"),
        (["--format", "openvino", "--bf16", "--calibration-patches", "3"], "--calibration-patches: only with --int8"),
        (["--format", "onnx", "--bf16"], "--bf16 applies to --format openvino only, not --format onnx"),
        (["--format", "openvino", "--bf16", "--int8"], "not allowed with argument"),
        (["--format", "openvino", "--int8", "--calibration-patches", "0"], "--calibration-patches"),
    ],
)
def test_bad_int8_options_are_one_line_exit_2(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "export"
    code, output = run_cli(["export", "-m", trained_work, "-f", "0", *args, "-o", out], capsys)
    assert code == 2
    assert message in output and len(output.strip().splitlines()) == 1, output
    assert not out.exists()


def test_int8_needs_a_cross_validation_fold_of_a_work_folder(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained_work / "models/3d_fullres/fold_0/checkpoint_final.pt"
    lone = tmp_path / "lone.pt"
    lone.write_bytes(checkpoint.read_bytes())
    code, output = run_cli(["export", "-m", lone, "--format", "openvino", "--int8", "-o", tmp_path / "e"], capsys)
    assert code == 2 and "--int8: -m must be a work folder" in output


needs_bf16 = pytest.mark.skipif(
    not __import__("nnseg.inference.backends", fromlist=["x"]).openvino_has_bf16(), reason="this CPU has no bf16"
)


@needs_bf16
def test_bf16_export_is_dice_checked_and_predicts_in_bf16(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bf16"
    code, output = run_cli(
        ["export", "-m", trained_work, "-f", "0", "--format", "openvino", "--bf16", "--max-dice-drop", "1", "-o", out],
        capsys,
    )
    assert code == 0, output
    assert "fold 0: bf16 mean Dice" in output and "calibrated" not in output
    manifest = Manifest.load(out)
    assert manifest.precision == "bf16"
    (entry,) = manifest.folds
    q = entry.quantization
    assert q is not None and q["inference_precision_hint"] == "bf16" and q["forced"] is False
    _, _, val = fold_cases(trained_work, 0)
    assert q["validation_cases"] == val and set(q["dice"]) == {"fp32", "bf16", "change"}
    # the IR is the fp32 one (no quantization nodes); bf16 is how OpenVINO runs it
    assert "FakeQuantize" not in (out / entry.file).read_text()
    from nnseg.inference.exported import load_export

    _, (runner,) = load_export(out)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    raw = Path(json.loads((trained_work / "plans.json").read_text())["dataset_root"])
    predictions = tmp_path / "pred"
    code, output = run_cli(["predict", "-m", out, "-i", raw / "imagesTs", "-o", predictions, "--device", "cpu"], capsys)
    assert code == 0, output
    assert list(predictions.glob("*.nii.gz"))


@needs_bf16
def test_bf16_needs_a_cross_validation_fold_of_a_work_folder(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lone = tmp_path / "lone.pt"
    lone.write_bytes((trained_work / "models/3d_fullres/fold_0/checkpoint_final.pt").read_bytes())
    code, output = run_cli(["export", "-m", lone, "--format", "openvino", "--bf16", "-o", tmp_path / "e"], capsys)
    assert code == 2 and "--bf16: -m must be a work folder" in output
