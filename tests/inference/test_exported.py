"""Exports and converted-model caches cannot be swapped unnoticed: every file an export uses is checked against
the SHA-256 its manifest records and must lie in the export folder, the manifest's content is covered by a digest,
and a file a runtime cannot read is exit 2 naming it. A cache that fails its record is converted again (stated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import nnseg
from nnseg.deploy.export import export_model
from nnseg.digest import CONTENT_KEY, content_sha256
from nnseg.inference import backends
from nnseg.inference.exported import MANIFEST
from nnseg.inference.predictor import Predictor
from nnseg.io import read_volume
from nnseg.networks import create
from nnseg.workspace import FoldPaths
from tests.deploy.test_export import raw_dataset
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def pristine(trained_work: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine_exports")
    for format in ("onnx", "openvino"):
        export_model(trained_work, root / format, format=format, folds=[0])
    return {format: root / format for format in ("onnx", "openvino")}


def _copy(pristine: dict[str, Path], format: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine[format], tmp_path / format))


def _predict(export: Path, trained_work: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    images = raw_dataset(trained_work) / "imagesTs"
    return run_cli(["predict", "-m", export, "-i", images, "-o", tmp_path / "out", "--device", "cpu"], capsys)


def _edit_manifest(export: Path, change, *, keep_digest: bool = False) -> None:
    path = export / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    if not keep_digest:
        data[CONTENT_KEY] = content_sha256(data)
    path.write_text(json.dumps(data))


def _other_network_onnx(path: Path, patch: tuple[int, ...]) -> None:
    network = create("unet", in_channels=1, classes=3, dims=3, patch_size=patch, base_features=4).eval()
    backends.write_onnx(network, torch.zeros(1, 1, *patch), path)


def _one_error_line(output: str, *fragments: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("nnseg: error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_an_intact_export_predicts_from_the_cli_and_from_python_in_two_lines(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys
) -> None:
    export = _copy(pristine, "onnx", tmp_path)
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 0, output
    image = sorted((raw_dataset(trained_work) / "imagesTs").glob("*.nii.gz"))[0]

    predictor = nnseg.open_model(export).predictor(device="cpu")
    labels = predictor.predict(image)

    assert np.array_equal(labels, read_volume(tmp_path / "out" / image.name.replace("_0000", "")).array)


def test_a_replaced_fold_file_is_refused(pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys) -> None:
    export = _copy(pristine, "onnx", tmp_path)
    patch = tuple(json.loads((export / MANIFEST).read_text())["input_shape"][2:])
    _other_network_onnx(export / "fold_0.onnx", patch)  # a working model, but not this one
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "fold_0.onnx: does not match the SHA-256 recorded in manifest.json", "export the model")


def test_an_edited_hash_or_labels_break_the_digest(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys
) -> None:
    export = _copy(pristine, "onnx", tmp_path)

    def new_hash(data: dict) -> None:
        data["folds"][0]["files_sha256"]["fold_0.onnx"] = "0" * 64

    _edit_manifest(export, new_hash, keep_digest=True)
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "manifest.json: its content does not match its digest")

    export = _copy(pristine, "onnx", tmp_path / "labels")

    def swap_labels(data: dict) -> None:
        names = list(data["labels"])
        data["labels"] = dict(zip(names, reversed(list(data["labels"].values()))))

    _edit_manifest(export, swap_labels, keep_digest=True)
    assert _predict(export, trained_work, tmp_path, capsys)[0] == 2
    export = _copy(pristine, "onnx", tmp_path / "labels_rehashed")
    _edit_manifest(export, swap_labels)  # digest recomputed: the labels still have to agree with the plan
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "damaged export manifest (labels: differ from the plan's labels)")


def test_a_file_outside_the_export_is_refused(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys
) -> None:
    export = _copy(pristine, "onnx", tmp_path / "a")
    other = _copy(pristine, "onnx", tmp_path / "b")

    def point_outside(data: dict) -> None:
        entry = data["folds"][0]
        digest = entry["files_sha256"].pop("fold_0.onnx")
        entry["file"] = "../../b/onnx/fold_0.onnx"
        entry["files_sha256"][entry["file"]] = digest

    _edit_manifest(export, point_outside)
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "is not a file of the export folder")
    assert other.is_dir()

    linked = _copy(pristine, "onnx", tmp_path / "c")  # a link out of the folder, with the right content
    (linked / "fold_0.onnx").unlink()
    (linked / "fold_0.onnx").symlink_to(other / "fold_0.onnx")
    code, output = _predict(linked, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "points outside the export folder")


@pytest.mark.parametrize(
    ("format", "damage"),
    [("onnx", "truncate:fold_0.onnx"), ("openvino", "truncate:fold_0.bin"), ("openvino", "garbage:fold_0.xml")],
)
def test_damaged_model_files_are_exit_2_naming_them(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys, format: str, damage: str
) -> None:
    export = _copy(pristine, format, tmp_path)
    how, name = damage.split(":")
    path = export / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"<net><<<not xml")
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, f"{name}: does not match the SHA-256")


def test_a_file_the_runtime_cannot_read_is_named_even_with_matching_hashes(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys
) -> None:
    export = _copy(pristine, "onnx", tmp_path)
    (export / "fold_0.onnx").write_bytes(b"not a protobuf at all")

    def rehash(data: dict) -> None:
        from nnseg.digest import file_sha256

        data["folds"][0]["files_sha256"]["fold_0.onnx"] = file_sha256(export / "fold_0.onnx")

    _edit_manifest(export, rehash)
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "fold_0.onnx: onnxruntime cannot read it", "export the model again")


def test_an_export_of_an_earlier_manifest_version_is_refused(
    pristine: dict[str, Path], trained_work: Path, tmp_path: Path, capsys
) -> None:
    export = _copy(pristine, "onnx", tmp_path)
    _edit_manifest(export, lambda data: data.update(manifest_version=1))
    code, output = _predict(export, trained_work, tmp_path, capsys)
    assert code == 2
    _one_error_line(output, "manifest version 1", "export the model again")


def test_a_swapped_or_damaged_cache_is_converted_again(trained_work: Path, tmp_path: Path) -> None:
    models = Path(shutil.copytree(trained_work / "models" / "3d_fullres", tmp_path / "work" / "models" / "3d_fullres"))
    shutil.copy(trained_work / "plans.json", tmp_path / "work" / "plans.json")
    cache = FoldPaths(models / "fold_0").cache
    reference = Predictor.from_checkpoints(models, device="cpu", backend="torch")
    patch = reference.config_plan.patch_size
    batch = torch.randn((2, 1, *patch), generator=torch.Generator().manual_seed(5))
    expected = reference.runners[0](batch)
    Predictor.from_checkpoints(models, device="cpu", backend="openvino")  # fills the cache
    (xml,) = cache.glob("openvino_*.xml")

    # another network's IR copied over this one's
    other = create("unet", in_channels=1, classes=3, dims=3, patch_size=patch, base_features=4).eval()
    backends.save_openvino(backends.convert_openvino(other, torch.zeros(1, 1, *patch)), tmp_path / "other.xml")
    shutil.copy(tmp_path / "other.xml", xml)
    shutil.copy(tmp_path / "other.bin", xml.with_suffix(".bin"))
    with pytest.warns(UserWarning, match="converted-model cache not used: its files do not match their record"):
        swapped = Predictor.from_checkpoints(models, device="cpu", backend="openvino")
    assert float((swapped.runners[0](batch) - expected).abs().max()) <= 1e-3

    # a truncated .bin
    data = xml.with_suffix(".bin").read_bytes()
    xml.with_suffix(".bin").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="converted again|converting the checkpoint again"):
        damaged = Predictor.from_checkpoints(models, device="cpu", backend="openvino")
    assert float((damaged.runners[0](batch) - expected).abs().max()) <= 1e-3
    assert np.array_equal(sorted(p.suffix for p in cache.iterdir()), [".bin", ".json", ".xml"])
