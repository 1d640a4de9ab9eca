"""predict / evaluate / ensemble / find-best / postprocess through the CLI, on a tiny trained work folder;
final validation's summary.json and evaluate's metrics.json share one schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnseg.cli import main
from nnseg.evaluation import EvaluationSummary
from nnseg.io import Geometry, read_volume, write_volume


def _raw(work: Path) -> Path:
    return Path(json.loads((work / "plans.json").read_text())["dataset_root"])


def test_predict_writes_input_geometry_and_skips_existing(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _raw(trained_work) / "imagesTs"
    out = tmp_path / "pred"
    args = [
        "predict",
        "-i",
        str(images),
        "-o",
        str(out),
        "-m",
        str(trained_work),
        "--device",
        "cpu",
        "--save-probabilities",
        "--overlay",
    ]
    assert main(args) == 0
    assert "predicted 1 case(s)" in capsys.readouterr().out
    prediction, source = read_volume(out / "case_006.nii.gz"), read_volume(images / "case_006_0000.nii.gz")
    np.testing.assert_allclose(prediction.geometry.affine, source.geometry.affine, atol=1e-5)
    assert prediction.array.shape == source.array.shape
    with np.load(out / "case_006.npz") as data:
        assert data["probabilities"].shape == (3, *source.array.shape)
        assert list(data["labels"]) == ["background", "organ", "lesion"]
    assert (out / "case_006_overlay.png").stat().st_size > 1000
    assert main(args) == 0
    assert "skipped 1 already predicted" in capsys.readouterr().out


def test_bad_cases_are_reported_and_the_rest_predicted(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    source = _raw(trained_work) / "imagesTs" / "case_006_0000.nii.gz"
    shutil.copy(source, folder / "good_0000.nii.gz")
    shutil.copy(source, folder / "twochannel_0000.nii.gz")
    shutil.copy(source, folder / "twochannel_0001.nii.gz")
    assert (
        main(
            [
                "predict",
                "-i",
                str(folder),
                "-o",
                str(tmp_path / "out"),
                "-m",
                str(trained_work),
                "--device",
                "cpu",
                "--no-tta",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "twochannel" in captured.err and "expects 1" in captured.err
    assert (tmp_path / "out" / "good.nii.gz").is_file()
    assert main(["predict", "-i", str(folder), "-o", str(folder), "-m", str(trained_work), "--no-tta"]) == 2
    assert "the output folder is the input folder" in capsys.readouterr().err
    shutil.copy(source, tmp_path / "solo.nii.gz")  # a single file predicted next to itself
    assert (
        main(["predict", "-i", str(tmp_path / "solo.nii.gz"), "-o", str(tmp_path), "-m", str(trained_work), "--no-tta"])
        == 2
    )
    assert "would overwrite an input" in capsys.readouterr().err


def test_evaluate_ensemble_find_best_postprocess(
    trained_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw(trained_work)
    dirs = []
    for configuration in ("3d_fullres", "2d"):
        out = tmp_path / configuration
        assert (
            main(
                [
                    "predict",
                    "-i",
                    str(raw / "imagesTs"),
                    "-o",
                    str(out),
                    "-m",
                    str(trained_work),
                    "-c",
                    configuration,
                    "--device",
                    "cpu",
                    "--no-tta",
                    "--save-probabilities",
                ]
            )
            == 0
        )
        dirs.append(str(out))
    assert main(["ensemble", "-i", *dirs, "-o", str(tmp_path / "ens")]) == 0
    ensembled = read_volume(tmp_path / "ens" / "case_006.nii.gz")
    assert ensembled.array.shape == read_volume(raw / "labelsTs" / "case_006.nii.gz").array.shape

    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "ens"),
                "--ref",
                str(raw / "labelsTs"),
                "--dataset-json",
                str(raw / "dataset.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "organ" in out and "lesion" in out
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert "case_006" in json.dumps(metrics)

    assert main(["find-best", "--work", str(trained_work)]) == 0
    decision = json.loads((trained_work / "inference.json").read_text())
    assert set(decision["candidates"]) == {"3d_fullres", "2d", "2d+3d_fullres"}
    assert decision["configurations"][0] in ("3d_fullres", "2d")
    assert (
        main(["postprocess", "-i", str(tmp_path / "ens"), "-o", str(tmp_path / "pp"), "--work", str(trained_work)]) == 0
    )
    assert (tmp_path / "pp" / "case_006.nii.gz").is_file()


def test_ensemble_needs_probabilities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    write_volume(
        tmp_path / "a" / "x.nii.gz",
        np.zeros((4, 4, 4), np.uint8),
        Geometry(affine=np.eye(4), shape=(4, 4, 4)),
        is_label=True,
    )
    assert main(["ensemble", "-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c")]) == 2
    assert "--save-probabilities" in capsys.readouterr().err


def _key_tree(value: object) -> object:
    """The keys of every object, at every level (lists: the key trees of their items, once each)."""
    if isinstance(value, dict):
        return {key: _key_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        trees = []
        for item in value:
            tree = _key_tree(item)
            if tree not in trees:
                trees.append(tree)
        return trees
    return None


def test_validation_summary_and_metrics_json_share_one_schema(trained_work: Path, tmp_path: Path) -> None:
    raw = _raw(trained_work)
    validation = trained_work / "models" / "3d_fullres" / "fold_0" / "validation"
    references = tmp_path / "ref"
    references.mkdir()
    for prediction in validation.glob("*.nii.gz"):
        shutil.copy(raw / "labelsTr" / prediction.name, references / prediction.name)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(validation),
                "--ref",
                str(references),
                "--dataset-json",
                str(raw / "dataset.json"),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    paths = (validation / "summary.json", tmp_path / "eval" / "metrics.json")
    trained, evaluated = (json.loads(path.read_text()) for path in paths)
    assert _key_tree(trained) == _key_tree(evaluated)
    assert list(trained) == list(evaluated)  # same key order too
    first, second = (EvaluationSummary.load(path) for path in paths)  # one loader reads both
    assert len(first.cases) == len(second.cases) >= 1
    for case_a, case_b in zip(first.cases, second.cases):  # same predictions, same references: same values
        assert case_a.case == case_b.case
        np.testing.assert_equal(
            {n: m.to_dict() for n, m in case_a.metrics.items()}, {n: m.to_dict() for n, m in case_b.metrics.items()}
        )
    assert first.mean_dice == pytest.approx(second.mean_dice)
    assert first.mean_dice_per_class == pytest.approx(second.mean_dice_per_class)
    assert set(first.mean_dice_per_class) == {"organ", "lesion"}
