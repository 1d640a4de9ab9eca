"""Region-based training and sparse (ignore-label) training through the whole CLI pipeline, at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg.checkpoint import Checkpoint, load_weights
from nnseg.io import read_volume
from nnseg.networks import build_network
from nnseg.workspace import Workspace
from tests.helpers import run_cli

SYNTH = ["--cases", 3, "--test-cases", 1, "--shape", "24,28,28", "--seed", 3]
TRAIN = ["--epochs", 1, "--iters-per-epoch", 2, "--val-iters", 1, "--device", "cpu", "--loader-threads", 1]


def _pipeline(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, Checkpoint, dict, Path]:
    work, pred = tmp_path / "work", tmp_path / "pred"
    for args in (
        ["plan", raw, "--work", work, "--preset", "cpu"],
        ["preprocess", "--work", work, "--config", "3d_fullres", "--workers", 1],
        ["train", "--work", work, *TRAIN, "--no-tracking"],
        ["predict", "-i", raw / "imagesTs", "-o", pred, "-m", work, "--device", "cpu", "--no-tta"],
        ["evaluate", "--pred", pred, "--ref", raw / "labelsTs", "--dataset-json", raw / "dataset.json"],
    ):
        code, output = run_cli(args, capsys)
        assert code == 0, output
    plans = json.loads((work / "plans.json").read_text())
    checkpoint = Checkpoint.load(Workspace.at(work).fold_paths("3d_fullres", 0).final)
    metrics = json.loads((pred / "metrics.json").read_text())
    return plans, checkpoint, metrics, pred


def _output_channels(checkpoint: Checkpoint) -> int:
    """Output channels of the trained network (its weights load only into a network of that many)."""
    config = checkpoint.plan.configuration(checkpoint.configuration)
    network = build_network(
        config.network, len(checkpoint.plan.channel_names), checkpoint.plan.num_classes, deep_supervision=False
    )
    load_weights(network, checkpoint.network_state, "checkpoint")
    with torch.no_grad():
        output = network.eval()(torch.zeros(1, len(checkpoint.plan.channel_names), *config.patch_size))
    return int(output.shape[1])


def test_region_dataset_trains_one_sigmoid_per_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    assert run_cli(["synth", raw, "--regions", *SYNTH], capsys)[0] == 0
    plans, checkpoint, metrics, pred = _pipeline(raw, tmp_path, capsys)
    assert plans["objective"] == "sigmoid" and plans["regions_class_order"] == [1, 2, 3]
    assert checkpoint.plan.scheme.objective == "sigmoid"
    assert _output_channels(checkpoint) == 3  # whole_tumor, tumor_core, enhancing
    for path in pred.glob("*.nii.gz"):
        assert set(np.unique(read_volume(path).array)) <= {0, 1, 2, 3}
    assert list(metrics["per_class"]) == ["whole_tumor", "tumor_core", "enhancing"]
    assert metrics["per_class"]["whole_tumor"]["labels"] == [1, 2, 3]


def test_sparse_dataset_trains_without_its_ignore_voxels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    assert run_cli(["synth", raw, "--sparse", 0.2, *SYNTH], capsys)[0] == 0
    plans, checkpoint, metrics, pred = _pipeline(raw, tmp_path, capsys)
    assert plans["objective"] == "softmax" and plans["labels"]["ignore"] == 3
    assert _output_channels(checkpoint) == 3  # background, organ, lesion: ignore is no output
    for path in pred.glob("*.nii.gz"):
        assert set(np.unique(read_volume(path).array)) <= {0, 1, 2}
    assert list(metrics["per_class"]) == ["organ", "lesion"]
    validation = json.loads(Workspace.at(tmp_path / "work").fold_paths("3d_fullres", 0).validation_summary.read_text())
    assert "ignore" not in validation["per_class"]
