"""Inference backends: choice of backend, fp32 OpenVINO, conversion cache beside the checkpoint, CLI errors."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg.checkpoint import Checkpoint
from nnseg.errors import NnsegError
from nnseg.inference import backends
from nnseg.inference.config import PredictConfig
from nnseg.inference.predictor import Predictor
from nnseg.io import read_volume
from nnseg.workspace import FoldPaths
from tests.deploy.test_export import raw_dataset, run_cli


@pytest.fixture()
def models(trained_work: Path, tmp_path: Path) -> Path:
    """A private copy of ``models/3d_fullres`` (the cache is written beside the checkpoints), without the cache that
    tests predicting from ``trained_work`` with the default backend may have left there."""
    source = trained_work / "models" / "3d_fullres"
    ignore = shutil.ignore_patterns(FoldPaths(Path("fold")).cache.name)
    return Path(shutil.copytree(source, tmp_path / "3d_fullres", ignore=ignore))


def test_backend_option_lists_every_backend() -> None:
    option = next(f for f in fields(PredictConfig) if f.name == "backend")
    assert option.default == "auto"
    for name in backends.BACKENDS:
        assert PredictConfig(backend=name).backend == name
    with pytest.raises(NnsegError, match="backend must be one of auto, torch, openvino, onnxruntime"):
        PredictConfig(backend="tensorrt")


def test_auto_is_openvino_on_cpu_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.resolve_backend("auto", "cpu") == ("openvino", "cpu")
    assert backends.resolve_backend("openvino", "auto") == ("openvino", "cpu")
    assert backends.resolve_backend("torch", "auto") == ("torch", "auto")
    monkeypatch.setattr(backends, "available", lambda package: False)
    assert backends.resolve_backend("auto", "cpu") == ("torch", "cpu")
    with pytest.raises(NnsegError, match="--backend onnxruntime runs on the CPU; use --device cpu"):
        backends.resolve_backend("onnxruntime", "cuda:0")


def test_openvino_precision_is_checked() -> None:
    with pytest.raises(NnsegError, match="precision must be one of f32, bf16, f16"):
        backends.OpenVinoRunner(Path("unused.xml"), precision="int8")


def test_weights_hash_follows_the_weights(trained_work: Path) -> None:
    state = Checkpoint.load(trained_work / "models/3d_fullres/fold_0/checkpoint_final.pt").network_state
    shuffled = dict(reversed(list(state.items())))
    assert backends.weights_sha256(state) == backends.weights_sha256(shuffled)
    changed = dict(state)
    name = next(iter(changed))
    changed[name] = changed[name] + 1e-6
    assert backends.weights_sha256(changed) != backends.weights_sha256(state)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_backend_windows_match_torch(models: Path, backend: str) -> None:
    torch_predictor = Predictor.from_checkpoints(models, device="cpu", backend="torch")
    other = Predictor.from_checkpoints(models, device="cpu", backend=backend)
    batch = torch.randn((3, 1, *torch_predictor.config_plan.patch_size), generator=torch.Generator().manual_seed(3))
    difference = (other.runners[0](batch) - torch_predictor.runners[0](batch)).abs().max()
    assert float(difference) <= 1e-3
    if backend == "openvino":  # OpenVINO's default on CPUs with bf16 support is bf16, which changes labels
        hint = other.runners[0].compiled.get_property("INFERENCE_PRECISION_HINT")  # type: ignore[attr-defined]
        assert str(hint) in ("<Type: 'float32'>", "f32")
    suffix = {"openvino": ".xml", "onnxruntime": ".onnx"}[backend]
    assert len(list(FoldPaths(models / "fold_0").cache.glob(f"*{suffix}"))) == 1


def test_openvino_cache_is_made_once_and_reused(
    models: Path, trained_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    images = raw_dataset(trained_work) / "imagesTs"
    cache = FoldPaths(models / "fold_0").cache

    def predict(out: str, *extra: str) -> None:
        args = ["predict", "-m", models, "-i", images, "-o", tmp_path / out, "--device", "cpu", *extra]
        code, output = run_cli(args, capsys)
        assert code == 0, output

    predict("torch", "--backend", "torch")
    assert not cache.exists()
    predict("first", "--backend", "openvino")
    (xml,) = cache.glob("openvino_*.xml")
    assert len(xml.stem) == len("openvino_") + 16 and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in cache.iterdir()) == sorted(xml.with_suffix(s).name for s in (".bin", ".json", ".xml"))
    stamp = (xml.stat().st_mtime_ns, xml.with_suffix(".bin").stat().st_mtime_ns)

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(backends, "convert_openvino", no_conversion)
    predict("second")  # --backend auto: openvino on the CPU
    assert (xml.stat().st_mtime_ns, xml.with_suffix(".bin").stat().st_mtime_ns) == stamp
    assert len(list(cache.iterdir())) == 3  # the IR and its record
    for case in sorted((tmp_path / "torch").glob("*.nii.gz")):
        expected = read_volume(case).array
        for run in ("first", "second"):
            assert np.mean(read_volume(tmp_path / run / case.name).array == expected) >= 0.999


def test_cache_key_changes_with_what_shapes_the_converted_model() -> None:
    key = backends.cache_key("a" * 64, {"architecture": "unet"}, (1, 16, 16, 16), "openvino")
    assert len(key) == 16
    assert key == backends.cache_key("a" * 64, {"architecture": "unet"}, (1, 16, 16, 16), "openvino")
    assert key != backends.cache_key("b" * 64, {"architecture": "unet"}, (1, 16, 16, 16), "openvino")
    assert key != backends.cache_key("a" * 64, {"architecture": "unetpp"}, (1, 16, 16, 16), "openvino")
    assert key != backends.cache_key("a" * 64, {"architecture": "unet"}, (1, 32, 16, 16), "openvino")


def test_unwritable_cache_still_predicts(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FoldPaths(models / "fold_0").cache.write_text("a file where the cache folder would go")
    predictor = Predictor.from_checkpoints(models, device="cpu", backend="openvino")
    assert isinstance(predictor.runners[0], backends.OpenVinoRunner)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--backend", "tensorrt"], "--backend: must be one of auto, torch, openvino, onnxruntime, got 'tensorrt'"),
        (["--backend", "openvino", "--device", "cuda"], "--backend openvino runs on the CPU; use --device cpu"),
        (["--backend", "onnxruntime", "--missing-package"], "--backend onnxruntime needs the onnxruntime package"),
    ],
)
def test_bad_backend_input_is_one_line_exit_2(
    models: Path,
    trained_work: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    extra: list[str],
    expected: str,
) -> None:
    if "--missing-package" in extra:
        extra = extra[:-1]
        real = backends.importlib.import_module
        monkeypatch.setattr(
            backends.importlib,
            "import_module",
            lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name == "onnxruntime" else real(name, *a),
        )
    images = raw_dataset(trained_work) / "imagesTs"
    code, output = run_cli(["predict", "-m", models, "-i", images, "-o", tmp_path / "out", *extra], capsys)
    assert code == 2
    assert expected in output and output.count("\n") == 1, output
