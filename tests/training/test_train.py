"""Training end to end on tiny phantoms: checkpoints, curves, validation, MLflow (embedded and live server),
kill -9 + resume in the same run, and torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnseg.checkpoint import Checkpoint, TrainingState
from nnseg.recipes import RECIPES
from nnseg.training.config import TrainConfig
from nnseg.training.loop import train

ARTIFACTS = {"plans.json", "fingerprint.json", "splits.json", "curves.png", "summary.json", "model/checkpoint_final.pt"}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _check_run(uri: str, run_id: str, epochs: int) -> None:
    client = _client(uri)
    run = client.get_run(run_id)
    assert run.data.tags["configuration"] == "3d_fullres" and run.data.tags["fold"] == "0"
    assert run.data.params["plan.patch_size"].startswith("[")
    assert "trainer.epochs" in run.data.params and "fingerprint.cases" in run.data.params
    for metric in ("train_loss", "val_loss", "lr", "ema_pseudo_dice", "pseudo_dice_organ", "epoch_time_s"):
        history = client.get_metric_history(run_id, metric)
        assert sorted(m.step for m in history) == list(range(epochs)), metric
    assert run.data.metrics["final_val_mean_dice"] >= 0
    assert ARTIFACTS <= _artifacts(client, run_id)


def _config(**overrides) -> TrainConfig:
    settings = dict(fold=0, epochs=2, iters_per_epoch=3, val_iters=2, device="cpu", loader_threads=1)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_short_training_with_embedded_mlflow(preprocessed_work: Path) -> None:
    result = train(preprocessed_work, _config(), show_progress=False)
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    for name in (
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "checkpoint_final.pt",
        "curves.png",
        "validation/summary.json",
    ):
        assert (fold / name).is_file(), name
    assert (preprocessed_work / "splits.json").is_file()
    final, latest = Checkpoint.load(fold / "checkpoint_final.pt"), Checkpoint.load(fold / "checkpoint_latest.pt")
    assert final.finished and final.epochs_trained == 2 and final.training is None  # a model, not a resume point
    assert latest.training is not None and [h["epoch"] for h in latest.training.history] == [0, 1]
    assert final.plan.dataset_name == "PhantomsCT" and final.configuration == "3d_fullres"
    assert result.validation is not None and set(result.validation["mean_dice_per_class"]) == {"organ", "lesion"}
    assert (preprocessed_work / "mlflow.db").is_file()
    _check_run(f"sqlite:///{(preprocessed_work / 'mlflow.db').resolve()}", result.run_id, epochs=2)


def test_training_against_a_live_mlflow_server(preprocessed_work: Path, mlflow_server: str) -> None:
    result = train(preprocessed_work, _config(tracking_uri=mlflow_server, experiment="live"), show_progress=False)
    assert result.run_id is not None
    _check_run(mlflow_server, result.run_id, epochs=2)


def test_unreachable_tracking_server_does_not_stop_training(preprocessed_work: Path) -> None:
    with pytest.warns(UserWarning, match="127.0.0.1:9"):
        result = train(
            preprocessed_work,
            _config(epochs=1, tracking_uri="http://127.0.0.1:9", final_validation=False),
            show_progress=False,
        )
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    assert result.epochs_done == 1 and (fold / "checkpoint_final.pt").is_file()
    assert (fold / "tracking_fallback.jsonl").is_file()


def test_2d_configuration_and_fold_all(preprocessed_work: Path) -> None:
    result = train(
        preprocessed_work, _config(configuration="2d", fold="all", epochs=1, tracking=False), show_progress=False
    )
    assert (preprocessed_work / "models" / "2d" / "fold_all" / "checkpoint_final.pt").is_file()
    assert result.validation is None


def _train_command(work: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nnseg",
        "train",
        "--work",
        str(work),
        "--device",
        "cpu",
        "--loader-threads",
        "1",
        "--no-final-validation",
        *extra,
    ]


def test_kill_9_mid_epoch_then_resume_in_the_same_run(preprocessed_work: Path) -> None:
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    command = _train_command(preprocessed_work, "--epochs", "6", "--iters-per-epoch", "20", "--val-iters", "1")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until epoch 1 is saved, then kill during epoch 2
        latest = fold / "checkpoint_latest.pt"
        if latest.is_file() and _training(latest).epoch >= 1:
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("training did not reach epoch 1")
    time.sleep(0.3)  # into epoch 2
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _training(fold / "checkpoint_latest.pt")
    assert 1 <= before.epoch < 5 and before.run_id  # killed with epochs left to do
    assert not (fold / "checkpoint_final.pt").exists()
    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
    assert Checkpoint.load(fold / "checkpoint_final.pt").finished
    final = _training(fold / "checkpoint_latest.pt")
    assert [h["epoch"] for h in final.history] == list(range(6))  # continued, nothing repeated or lost
    assert final.run_id == before.run_id
    history = _client(f"sqlite:///{(preprocessed_work / 'mlflow.db').resolve()}").get_metric_history(
        before.run_id, "train_loss"
    )
    assert sorted({m.step for m in history}) == list(range(6))


def test_torchrun_two_cpu_processes(preprocessed_work: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nnseg",
        "train",
        "--work",
        str(preprocessed_work),
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--iters-per-epoch",
        "2",
        "--val-iters",
        "1",
        "--loader-threads",
        "1",
        "--no-tracking",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    assert sorted(p.name for p in fold.glob("checkpoint_*.pt")) == [
        "checkpoint_best.pt",
        "checkpoint_final.pt",
        "checkpoint_latest.pt",
    ]
    assert not list(fold.glob(".*.tmp"))
    assert [h["epoch"] for h in _training(fold / "checkpoint_latest.pt").history] == [0, 1]


def _training(path: Path) -> TrainingState:
    state = Checkpoint.load(path).training
    assert state is not None
    return state


def test_poly_schedule() -> None:
    nnunet = RECIPES["nnunet"]  # poly per epoch, as nnU-Net
    assert nnunet.learning_rate(0, 250, 250_000) == 0.01
    assert nnunet.learning_rate(500 * 250 + 17, 250, 250_000) == pytest.approx(0.01 * 0.5**0.9)


def test_missing_preprocessing_is_a_clear_error(tmp_path: Path, preprocessed_work: Path) -> None:
    from nnseg.cli import main

    (preprocessed_work / "preprocessed").rename(tmp_path / "moved")
    assert main(["train", "--work", str(preprocessed_work), "--device", "cpu", "--epochs", "1"]) == 2


def test_the_plans_deep_supervision_flag_decides_and_a_pruned_unetpp_keeps_it(preprocessed_work: Path) -> None:
    """deep_supervision: false in plans.json trains without heads (the checkpoint says so); a plan that prunes its
    UNet++ refuses --no-deep-supervision, since only deep supervision trains the pruned head."""
    import json
    from dataclasses import replace

    from nnseg.errors import NnsegError
    from nnseg.fingerprint import Fingerprint
    from nnseg.planning import Plan, load_preset, make_plan
    from nnseg.workspace import Workspace

    plans = preprocessed_work / "plans.json"
    data = json.loads(plans.read_text())
    data["configurations"]["3d_fullres"]["network"]["deep_supervision"] = False
    plans.write_text(json.dumps(data))
    train(preprocessed_work, _config(epochs=1, tracking=False, final_validation=False), show_progress=False)
    assert Checkpoint.load(Workspace.at(preprocessed_work).fold_paths("3d_fullres", 0).final).deep_supervision is False

    plan = Plan.load(plans)
    fingerprint = Fingerprint.load(Workspace.at(preprocessed_work).fingerprint)
    preset = load_preset("cpu", architecture="unetpp")
    unetpp = make_plan(fingerprint, plan.labels, preset, nnseg_version="t", dataset_root=plan.dataset_root)
    config = unetpp.configurations["3d_fullres"]
    pruned = replace(config, network=replace(config.network, prune_level=1))
    replace(unetpp, configurations={**unetpp.configurations, "3d_fullres": pruned}).save(plans)
    with pytest.raises(NnsegError, match="--no-deep-supervision: the plan prunes its UNet.."):
        train(preprocessed_work, _config(deep_supervision=False, tracking=False), resume=False, show_progress=False)
