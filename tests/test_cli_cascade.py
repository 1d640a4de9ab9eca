"""The cascade end to end through the CLI, at tiny size: synth -> plan (a preset that forces 3d_lowres) ->
preprocess -> train 3d_lowres on both folds of a 2-fold split -> train 3d_cascade_fullres -> predict -> evaluate
-> find-best. Also: the cascade refuses to train before the lowres folds have written its input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.io import read_volume
from nnseg.planning.plan import Plan
from nnseg.synth import SynthConfig, generate_dataset
from nnseg.workspace import Workspace
from tests.helpers import run_cli

#: nnU-Net's rules with a fixed 16^3 patch and 3d_lowres planned when the patch covers < 50 % of the image (nnU-Net:
#: 25 %), so that 24 x 28 x 28 phantoms get the cascade; a tiny network keeps every step fast.
TINY_CASCADE_PRESET = {
    "name": "tiny_cascade",
    "description": "Test preset: a 16^3 patch, so that 3d_lowres is planned on tiny images.",
    "budget": {"type": "fixed", "patch_edge_3d": 16, "batch_size_3d": 2},
    "base_features": 4,
    "max_features_3d": 16,
    "lowres_threshold": 0.5,
    "configurations": ["3d_fullres", "3d_lowres"],
    "training_recipe": "small_budget",
}
TRAIN = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "0", "--device", "cpu", "--no-tracking"]


def _train(work: Path, configuration: str, fold: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = ["train", "--work", work, "--config", configuration, "--fold", fold, *TRAIN, "--loader-threads", "1"]
    return run_cli(args, capsys)


def test_cascade_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = generate_dataset(
        tmp_path / "raw", SynthConfig(num_cases=4, num_test=1, shape=(24, 28, 28), seed=5), show_progress=False
    )
    preset = tmp_path / "tiny_cascade.json"
    preset.write_text(json.dumps(TINY_CASCADE_PRESET))
    work = tmp_path / "work"
    code, out = run_cli(["plan", raw, "--work", work, "--preset", preset, "--workers", "1"], capsys)
    assert code == 0, out
    plan = Plan.load(work / "plans.json")
    assert list(plan.configurations) == ["3d_lowres", "3d_fullres", "3d_cascade_fullres"]
    cascade, fullres = plan.configurations["3d_cascade_fullres"], plan.configurations["3d_fullres"]
    assert cascade.previous_stage == "3d_lowres" and plan.configurations["3d_lowres"].next_stage == cascade.name
    assert cascade.data_identifier == fullres.data_identifier and cascade.patch_size == fullres.patch_size
    assert plan.input_channels(cascade.name) == 1 + 2  # CT + organ and lesion one-hot

    code, out = run_cli(["preprocess", "--work", work, "--workers", "1"], capsys)
    assert code == 0, out
    # a 2-fold split (splits.json is the user's to edit): two lowres folds cover every case
    workspace = Workspace(work)
    cases = [f"case_{i:03d}" for i in range(4)]
    splits = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:2], "val": cases[2:]}]
    workspace.splits.write_text(json.dumps(splits))

    assert _train(work, "3d_lowres", 0, capsys)[0] == 0
    lowres_fold0 = workspace.fold_paths("3d_lowres", 0)
    assert sorted(lowres_fold0.next_stage_cases("3d_cascade_fullres")) == cases[:2]
    stored = np.load(lowres_fold0.next_stage_case("3d_cascade_fullres", cases[0]))
    cached = np.load(workspace.preprocessed(fullres.data_identifier) / f"{cases[0]}_seg.npy")
    assert stored.shape == cached.shape  # on the fullres grid
    assert set(np.unique(stored)) <= {0, 1, 2}

    code, out = _train(work, "3d_cascade_fullres", 0, capsys)  # fold 1 of the lowres stage is missing
    assert code == 2
    assert "case_002, case_003" in out and "--config 3d_lowres --fold 1" in out and "Traceback" not in out

    assert _train(work, "3d_lowres", 1, capsys)[0] == 0
    code, out = _train(work, "3d_cascade_fullres", 0, capsys)
    assert code == 0, out
    assert (workspace.fold_paths("3d_cascade_fullres", 0).validation_summary).is_file()

    pred = tmp_path / "pred"
    predict = ["predict", "-i", raw / "imagesTs", "-o", pred, "-m", work, "-c", "3d_cascade_fullres"]
    code, out = run_cli([*predict, "--device", "cpu", "--tta", "none", "--save-probabilities"], capsys)
    assert code == 0, out
    assert "3d_lowres fold 0" in out and "3d_lowres fold 1" in out and "3d_cascade_fullres fold 0" in out
    prediction = read_volume(pred / "case_004.nii.gz")
    assert prediction.array.shape == read_volume(raw / "imagesTs" / "case_004_0000.nii.gz").array.shape
    with np.load(pred / "case_004.npz") as data:
        assert data["probabilities"].shape[0] == 3

    code, out = run_cli(["evaluate", "--pred", pred, "--ref", raw / "labelsTs", "--out", tmp_path / "ev"], capsys)
    assert code == 0, out
    assert "mean_dice" in json.loads((tmp_path / "ev" / "metrics.json").read_text())

    code, out = run_cli(["find-best", "--work", work], capsys)
    assert code == 0, out
    candidates = json.loads(workspace.inference_choice.read_text())["candidates"]
    assert "3d_cascade_fullres" in candidates and "3d_lowres+3d_cascade_fullres" in candidates

    # an export or a registered model holds one configuration's folds: a cascade stage is refused, naming the way
    code, out = run_cli(
        ["export", "-m", work, "-c", "3d_cascade_fullres", "--format", "onnx", "-o", tmp_path / "e"], capsys
    )
    assert code == 2 and "3d_cascade_fullres is a cascade stage: an export cannot bundle" in out, out
    assert not (tmp_path / "e").exists()
