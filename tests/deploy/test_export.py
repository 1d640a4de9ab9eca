"""nnseg export: every format matches PyTorch (random and real patches), predicts what the work folder predicts,
leaves nothing behind when it fails, and refuses bad input with one line (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg.checkpoint import Checkpoint
from nnseg.cli import main
from nnseg.deploy import export
from nnseg.deploy.export import export_model
from nnseg.errors import NnsegError
from nnseg.inference import backends
from nnseg.inference.config import EXPORT_FORMATS as FORMATS
from nnseg.inference.exported import Manifest, load_export
from nnseg.io import read_volume
from nnseg.networks import build_network
from tests.helpers import run_cli

CHECKPOINT = Path("models/3d_fullres/fold_0/checkpoint_final.pt")


def raw_dataset(work: Path) -> Path:
    return Path(json.loads((work / "plans.json").read_text())["dataset_root"])


def reference_network(work: Path) -> tuple[Checkpoint, torch.nn.Module]:
    checkpoint = Checkpoint.load(work / CHECKPOINT)
    plan = checkpoint.plan
    network = build_network(
        plan.configuration("3d_fullres").network,
        len(plan.channel_names),
        plan.num_classes,
        deep_supervision=checkpoint.deep_supervision,
    )
    network.load_state_dict(checkpoint.inference_state())  # as nnseg predict runs it
    return checkpoint, network.eval()


def real_patches(work: Path, patch: tuple[int, ...]) -> torch.Tensor:
    """Corner windows (not the centre ones the export checks) of three preprocessed cases, zero-padded."""
    folder = next((work / "preprocessed").iterdir())
    files = sorted(p for p in folder.glob("*.npy") if not p.stem.endswith(("_seg", "_locations")))[-3:]
    windows = []
    for file in files:
        data = np.load(file)[(slice(None), *(slice(0, p) for p in patch))]
        windows.append(np.pad(data, [(0, 0)] + [(0, p - s) for s, p in zip(data.shape[1:], patch)]))
    return torch.from_numpy(np.stack(windows).astype(np.float32))


@pytest.fixture(scope="module")
def exports(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fold 0 of 3d_fullres in every format (read-only)."""
    root = tmp_path_factory.mktemp("exports")
    for format in FORMATS:
        export_model(trained_work, root / format, format=format, folds=[0])
    return {format: root / format for format in FORMATS}


@pytest.fixture(scope="module")
def work_predictions(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nnseg predict -m WORK --backend torch`` of the test images."""
    out = tmp_path_factory.mktemp("work_predictions")
    args = ["predict", "-m", trained_work, "-i", raw_dataset(trained_work) / "imagesTs", "-o", out]
    assert main([str(a) for a in [*args, "-f", "0", "--device", "cpu", "--backend", "torch"]]) == 0
    return out


@pytest.mark.parametrize("format", FORMATS)
def test_manifest_describes_the_export(exports: dict[str, Path], trained_work: Path, format: str) -> None:
    manifest = Manifest.load(exports[format])
    checkpoint = Checkpoint.load(trained_work / CHECKPOINT)
    patch = checkpoint.plan.configuration("3d_fullres").patch_size
    assert (manifest.format, manifest.precision, manifest.configuration) == (format, "fp32", "3d_fullres")
    assert manifest.input_shape == ("N", 1, *patch)
    assert manifest.plan_object() == checkpoint.plan  # the predictor needs no checkpoint
    assert manifest.labels == {k: v if isinstance(v, int) else list(v) for k, v in checkpoint.plan.labels.items()}
    assert manifest.postprocessing is None  # the fixture has no inference.json
    (entry,) = manifest.folds
    assert entry.fold == 0 and (exports[format] / entry.file).is_file()
    assert entry.weights_sha256 == backends.weights_sha256(checkpoint.inference_state())
    assert entry.parity["random"]["patches"] == 2 and entry.parity["random"]["max_abs_diff"] <= 1e-3
    assert len(entry.parity["real"]["cases"]) == 2 and entry.parity["real"]["max_abs_diff"] <= 1e-3
    for figures in (entry.parity["random"], entry.parity["real"]):
        assert figures["logit_scale"] >= 1.0 and figures["label_agreement"] >= 0.999
        assert figures["relative_diff"] == pytest.approx(figures["max_abs_diff"] / figures["logit_scale"])
    if format == "openvino":
        assert (exports[format] / entry.file).with_suffix(".bin").is_file()
    leftovers = [p.name for p in exports[format].parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("format", FORMATS)
def test_reloaded_export_matches_pytorch(exports: dict[str, Path], trained_work: Path, format: str) -> None:
    """Independent of the export's own check: other windows, and batches of 1 and 3 (dynamic batch axis)."""
    checkpoint, network = reference_network(trained_work)
    patch = checkpoint.plan.configuration("3d_fullres").patch_size
    (runner,) = load_export(exports[format])[1]
    random = torch.randn((1, 1, *patch), generator=torch.Generator().manual_seed(7)) * 3
    for batch in (random, real_patches(trained_work, patch)):
        with torch.no_grad():
            expected = network(batch)
        got = runner(batch)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-3


def test_onnx_loads_without_nnseg(exports: dict[str, Path]) -> None:
    path = exports["onnx"] / "fold_0.onnx"
    code = (
        "import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
        "x = np.zeros((2, 1, *[int(v) for v in sys.argv[2:]]), np.float32); "
        "shape = tuple(s.run(None, {s.get_inputs()[0].name: x})[0].shape); "
        "assert not any(k.startswith('nnseg') for k in sys.modules), 'nnseg imported'; print(shape)"
    )
    patch = Manifest.load(exports["onnx"]).input_shape[2:]
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), *map(str, patch)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("(2, 3,")


@pytest.mark.parametrize("format", FORMATS)
def test_predict_from_export_equals_predict_from_work(
    exports: dict[str, Path],
    work_predictions: Path,
    trained_work: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    format: str,
) -> None:
    """Label maps identical to the checkpoint's (the requirement is >= 0.999 voxel agreement; we check both)."""
    images = raw_dataset(trained_work) / "imagesTs"
    code, output = run_cli(["predict", "-m", exports[format], "-i", images, "-o", tmp_path, "--device", "cpu"], capsys)
    assert code == 0, output
    assert f"3d_fullres {format} export" in output
    references = sorted(work_predictions.glob("*.nii.gz"))
    assert references
    for reference in references:
        expected, got = read_volume(reference), read_volume(tmp_path / reference.name)
        np.testing.assert_allclose(got.geometry.affine, expected.geometry.affine, atol=1e-5)
        assert np.mean(got.array == expected.array) >= 0.999
        np.testing.assert_array_equal(got.array, expected.array)


def test_a_failed_parity_check_writes_nothing(
    trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "out"
    export_model(trained_work, earlier, format="onnx", folds=[0])
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    real_runner = export.export_runner

    def off_by_a_hundredth(*args, **kwargs):
        runner = real_runner(*args, **kwargs)
        return lambda batch: runner(batch) + 0.01

    monkeypatch.setattr(export, "export_runner", off_by_a_hundredth)
    code, output = run_cli(["export", "-m", trained_work, "--format", "onnx", "-o", earlier], capsys)
    assert code == 2
    assert "fold 0: the onnx export's logits differ from PyTorch's by up to 0.01 on random patches" in output
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before  # the earlier export is kept whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_the_parity_tolerance_is_relative_to_the_logits_scale(
    trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """f32 error grows with the logits: 0.09 % of each logit passes a 0.1 % tolerance, whatever the scale."""
    real_runner = export.export_runner

    def scaled(*args, **kwargs):
        runner = real_runner(*args, **kwargs)
        return lambda batch: (runner(batch) * 1000.0) * 1.0009  # a network whose logits are 1000x larger

    real_networks = export._networks

    def larger_logits(*args, **kwargs):
        network, reference = real_networks(*args, **kwargs)
        return network, _Scaled(reference, 1000.0)

    monkeypatch.setattr(export, "export_runner", scaled)
    monkeypatch.setattr(export, "_networks", larger_logits)
    manifest = export_model(trained_work, tmp_path / "out", format="onnx", folds=[0])
    random = manifest.folds[0].parity["random"]
    assert random["max_abs_diff"] > 1e-3  # an absolute 1e-3 would refuse it
    assert random["relative_diff"] == pytest.approx(9e-4, rel=0.05) and random["label_agreement"] == 1.0


def test_an_export_that_changes_labels_writes_nothing(
    trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_runner = export.export_runner

    def swapped_classes(*args, **kwargs):
        runner = real_runner(*args, **kwargs)
        return lambda batch: runner(batch).flip(1)

    monkeypatch.setattr(export, "export_runner", swapped_classes)
    monkeypatch.setattr(export, "TOLERANCE", 1e9)  # only the label check can refuse it
    code, output = run_cli(["export", "-m", trained_work, "--format", "onnx", "-o", tmp_path / "out"], capsys)
    assert code == 2
    assert "fold 0: the onnx export gives" in output and "another label than PyTorch" in output
    assert not (tmp_path / "out").exists()


class _Scaled(torch.nn.Module):
    def __init__(self, network: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.network, self.factor = network, factor

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch) * self.factor


def test_export_replaces_an_earlier_export(trained_work: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    export_model(trained_work, out, format="onnx", folds=[0])
    code, output = run_cli(["export", "-m", trained_work, "-f", "0", "--format", "onnx", "-o", out], capsys)
    assert code == 0, output
    assert "fold 0: " in output and "max |logit diff| vs PyTorch: random" in output
    assert sorted(p.name for p in out.iterdir()) == ["fold_0.onnx", "manifest.json"]


def _no_package(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = backends.importlib.import_module

    def fake(module: str, *args):
        if module == name:
            raise ImportError(module)
        return real(module, *args)

    monkeypatch.setattr(backends.importlib, "import_module", fake)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("format", "--format must be one of onnx, openvino, got 'tflite'"),
        ("openvino", "--format openvino needs the openvino package: pip install 'nnseg[openvino]'"),
        ("onnxruntime", "--format onnx needs the onnxruntime package: pip install 'nnseg[onnx]'"),
        ("model", "-m {tmp}/missing: not found; give a work folder"),
        ("file", "-o {tmp}/a_file: is a file; give a folder for the export"),
        ("folder", "-o {tmp}/busy: folder exists and is not an nnseg export; give a new or empty folder"),
        ("config", "no trained 2d_missing model in it"),
    ],
)
def test_bad_export_input_is_one_line_exit_2(
    trained_work: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    expected: str,
) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    args = {"-m": trained_work, "--format": "onnx", "-o": tmp_path / "out"}
    if case == "format":
        args["--format"] = "tflite"
    elif case in ("openvino", "onnxruntime"):
        _no_package(case, monkeypatch)
        args["--format"] = "openvino" if case == "openvino" else "onnx"
    elif case == "model":
        args["-m"] = tmp_path / "missing"
    elif case == "file":
        args["-o"] = tmp_path / "a_file"
    elif case == "folder":
        args["-o"] = tmp_path / "busy"
    else:
        args["-c"] = "2d_missing"
    code, output = run_cli(["export", *[str(v) for item in args.items() for v in item]], capsys)
    assert code == 2
    assert output.startswith("nnseg: error: ") and output.count("\n") == 1, output
    assert expected.format(tmp=tmp_path) in output
    assert not (tmp_path / "out").exists() and (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_export_api_errors_are_nnseg_errors(trained_work: Path, tmp_path: Path) -> None:
    with pytest.raises(NnsegError, match="--precision must be one of fp32"):
        export_model(trained_work, tmp_path / "out", format="onnx", precision="fp16")
    work = Path(shutil.copytree(trained_work / "models", tmp_path / "models"))
    with pytest.raises(NnsegError, match="fold_3: folder not found"):
        export_model(work / "3d_fullres", tmp_path / "out", format="onnx", folds=[3])


def test_export_folder_refuses_another_backend(
    exports: dict[str, Path], trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = raw_dataset(trained_work) / "imagesTs"
    args = ["predict", "-m", exports["onnx"], "-i", images, "-o", tmp_path / "out", "--backend", "openvino"]
    code, output = run_cli(args, capsys)
    assert code == 2
    assert "is an onnx export, run by onnxruntime; leave --backend auto, or predict from the checkpoints" in output


def test_an_export_removes_what_a_killed_export_left_and_waits_for_a_live_one(
    trained_work: Path, tmp_path: Path, capsys
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".out.{int(dead.stdout)}.tmp"  # the folder a kill -9 during export leaves behind
    (left / "fold_0.onnx").parent.mkdir()
    (left / "fold_0.onnx").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".out.lock").write_text(json.dumps({"pid": live.pid, "host": __import__("socket").gethostname()}))
        code, output = run_cli(["export", "-m", trained_work, "--format", "onnx", "-o", tmp_path / "out"], capsys)
        assert code == 2 and f"export folder {tmp_path / 'out'} is in use by process {live.pid}" in output
    finally:
        live.kill()
        live.wait()
    export_model(trained_work, tmp_path / "out", format="onnx", folds=[0])  # the dead holder's lock taken over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
