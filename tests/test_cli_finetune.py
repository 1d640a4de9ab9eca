"""Fine-tuning end to end through the CLI: a 1-channel CT model with 3 classes starts a 2-channel MR model with 4
classes (plan --transfer-plan -> preprocess -> train --pretrained -> predict -> evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnseg.checkpoint import Checkpoint
from nnseg.synth import Structure, SynthConfig, generate_dataset
from tests.helpers import run_cli

SHAPE = (20, 24, 24)
TRAIN = ["--device", "cpu", "--loader-threads", "1", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1"]


def _params(fold: Path) -> dict[str, str]:
    """The run parameters of the local tracking record (the MLflow server given is unreachable on purpose)."""
    events = [json.loads(line) for line in (fold / "tracking_fallback.jsonl").read_text().splitlines()]
    params: dict[str, str] = {}
    for event in events:
        if event["kind"] == "params":
            params.update(event["payload"])
    return params


@pytest.mark.filterwarnings("ignore::UserWarning")  # the unreachable tracking server's warning
def test_finetune_1_to_2_channels_and_3_to_4_classes(
    preprocessed_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_work, work = preprocessed_work, tmp_path / "mr_work"  # CT phantoms, cpu preset, planned and preprocessed
    code, out = run_cli(["train", "--work", source_work, *TRAIN, "--no-tracking", "--no-final-validation"], capsys)
    assert code == 0, out
    source_ckpt = source_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"

    structures = (Structure("organ", 900), Structure("lesion", 60), Structure("cyst", 40))
    mr = generate_dataset(
        tmp_path / "Dataset004_MR",
        SynthConfig(num_cases=3, num_test=1, shape=SHAPE, modality="MR", channels=2, structures=structures, seed=5),
        show_progress=False,
    )
    code, out = run_cli(["plan", mr, "--work", work, "--transfer-plan", source_work, "--workers", "1"], capsys)
    assert code == 0, out
    assert "transfer: 3d_fullres: unet network" in out
    plan, source_plan = (json.loads((w / "plans.json").read_text()) for w in (work, source_work))
    assert plan["preset"] == "transfer:PhantomsCT" and plan["channel_names"] != source_plan["channel_names"]
    assert set(plan["configurations"]) <= set(source_plan["configurations"])
    ours, theirs = plan["configurations"]["3d_fullres"], source_plan["configurations"]["3d_fullres"]
    assert ours["network"] == theirs["network"] and ours["patch_size"] == theirs["patch_size"]
    assert [n["scheme"] for n in ours["normalization"]] == ["zscore", "zscore"]  # this dataset's, not CT's

    assert run_cli(["preprocess", "--work", work, "--config", "3d_fullres", "--workers", "1"], capsys)[0] == 0
    code, out = run_cli(
        ["train", "--work", work, *TRAIN, "--pretrained", source_ckpt, "--lr", "1e-9"]
        + ["--tracking-uri", "http://127.0.0.1:9", "--no-final-validation"],
        capsys,
    )
    assert code == 0, out
    assert "first conv       adapted 1 -> 2 channels (cyclic repeat, each copy / 2" in out
    assert "3 -> 4 classes: rows of background, organ, lesion copied" in out
    fold = work / "models" / "3d_fullres" / "fold_0"
    sha = __import__("hashlib").sha256(source_ckpt.read_bytes()).hexdigest()
    assert sha in out
    params = _params(fold)
    assert params["pretrained.sha256"] == sha and params["trainer.pretrained"] == str(source_ckpt)

    # the weights really came from the CT model (a learning rate of 1e-9 leaves them where they started)
    before, after = (
        Checkpoint.load(source_ckpt).network_state,
        Checkpoint.load(fold / "checkpoint_final.pt").network_state,
    )
    deep = "skip_layers.next_layer.downsample.conv1.conv.weight"
    torch.testing.assert_close(after[deep], before[deep], atol=1e-6, rtol=0)
    first = "input_block.conv1.conv.weight"
    assert after[first].shape[1] == 2 and before[first].shape[1] == 1
    # halves of the source's kernel, told apart by zero-sum fresh kernels: one image on both channels answers as before
    torch.testing.assert_close(after[first].sum(1, keepdim=True), before[first], atol=1e-6, rtol=0)
    assert not torch.allclose(after[first][:, 0], after[first][:, 1])

    pred = tmp_path / "pred"
    code, out = run_cli(
        ["predict", "-i", mr / "imagesTs", "-o", pred, "-m", work, "--device", "cpu", "--no-tta", "--backend", "torch"],
        capsys,
    )
    assert code == 0, out
    code, out = run_cli(
        ["evaluate", "--pred", pred, "--ref", mr / "labelsTs", "--dataset-json", mr / "dataset.json"], capsys
    )
    assert code == 0, out
    metrics = json.loads((pred / "metrics.json").read_text())
    assert list(metrics["labels"]) == ["organ", "lesion", "cyst"] and metrics["num_cases"] == 1
    assert set(metrics["mean_dice_per_class"]) == {"organ", "lesion", "cyst"}


def test_pretrained_checkpoint_of_another_topology_is_refused(
    preprocessed_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from nnseg.networks import build_network
    from nnseg.planning import Plan

    plan = Plan.load(preprocessed_work / "plans.json")
    config = plan.configuration("3d_fullres")
    wider = replace(config.network, features_per_stage=tuple(2 * f for f in config.network.features_per_stage))
    other = replace(plan, configurations={"3d_fullres": replace(config, network=wider)})
    path = Checkpoint.for_network(other, "3d_fullres", build_network(wider, 1, plan.num_classes)).save(
        tmp_path / "x.pt"
    )
    code, out = run_cli(["train", "--work", preprocessed_work, *TRAIN, "--no-tracking", "--pretrained", path], capsys)
    assert code == 2
    assert str(path) in out and "--transfer-plan" in out and "Traceback" not in out
    assert not (preprocessed_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_latest.pt").exists()
