"""Every registered architecture end to end through the CLI: plan --architecture -> preprocess -> train (a tiny
budget) -> predict; the prediction has the input's geometry and the checkpoint names the architecture; --prune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnseg.checkpoint import Checkpoint
from nnseg.cli import main
from nnseg.io import read_volume
from nnseg.networks import available_architectures
from nnseg.workspace import Workspace


@pytest.mark.parametrize("architecture", available_architectures())
def test_plan_train_predict_with_each_architecture(
    architecture: str, ct_dataset_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    raw = str(ct_dataset_template)
    assert main(["plan", raw, "--work", str(work), "--preset", "cpu", "--architecture", architecture]) == 0
    assert f"  {architecture}  " in capsys.readouterr().out  # the summary's network column
    plans = json.loads((work / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["network"]["architecture"] == architecture
    assert main(["preprocess", "--work", str(work), "--config", "3d_fullres", "--workers", "1"]) == 0
    train = ["train", "--work", str(work), "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1"]
    assert main([*train, "--device", "cpu", "--loader-threads", "1", "--no-tracking"]) == 0
    checkpoint = Checkpoint.load(Workspace.at(work).fold_paths("3d_fullres", 0).final)
    assert checkpoint.architecture.architecture == architecture
    out = tmp_path / "pred"
    images = ct_dataset_template / "imagesTs"
    assert main(["predict", "-i", str(images), "-o", str(out), "-m", str(work), "--device", "cpu", "--no-tta"]) == 0
    for source_path in sorted(images.glob("*_0000.nii.gz")):
        source = read_volume(source_path)
        prediction = read_volume(out / source_path.name.replace("_0000", ""))
        assert prediction.array.shape == source.array.shape
        np.testing.assert_allclose(prediction.geometry.affine, source.geometry.affine, atol=1e-5)
        assert set(np.unique(prediction.array)) <= {0, 1, 2}
    # UNet++ predicts with a pruned sub-network on request; other models refuse --prune with the reason
    capsys.readouterr()
    pruned = ["predict", "-i", str(images), "-o", str(tmp_path / "pruned"), "-m", str(work), "--device", "cpu"]
    if architecture == "unetpp":
        assert main([*pruned, "--no-tta", "--prune", "1"]) == 0
        assert len(list((tmp_path / "pruned").glob("*.nii.gz"))) == len(list(images.glob("*_0000.nii.gz")))
        assert main([*pruned, "--prune", "9"]) == 2
        assert "--prune must be in 1.." in capsys.readouterr().err
    else:
        assert main([*pruned, "--prune", "1"]) == 2
        assert f"--prune applies to unetpp models; this model is a {architecture}" in capsys.readouterr().err
