"""A run assembled from typed records: the RunRecord (open_run), the initial network, the recipe, the TrainingParts,
the time-budget probe and the tracking helpers, each called with the record and plain values (no trainer)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from nnseg.checkpoint import LogitAdjustment
from nnseg.errors import NnsegError
from nnseg.recipes import ADJUSTMENT_STRENGTHS, RECIPES
from nnseg.tracking import NullTracker
from nnseg.training.assembly import (
    build_parts,
    initial_network,
    open_run,
    resume_checkpoint,
    run_recipe,
    trial_offsets,
)
from nnseg.training.augment import TrainingAugmentation
from nnseg.training.budget import TimeBudget
from nnseg.training.config import TrainConfig
from nnseg.training.run_parameters import run_parameters
from nnseg.training.run_record import RunRecord
from nnseg.training.run_setup import log_finished_fold, start_tracker


def _config(**overrides) -> TrainConfig:
    settings = dict(fold=0, epochs=3, iters_per_epoch=2, val_iters=1, device="cpu", loader_threads=1, tracking=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def _augment(record: RunRecord) -> TrainingAugmentation:
    return TrainingAugmentation.for_patch_size(record.config_plan.patch_size)


def test_open_run_records_the_fold_and_seeds_the_rank(preprocessed_work: Path) -> None:
    record = open_run(preprocessed_work, _config(seed=5, batch_size=3), show_progress=False)
    splits = json.loads((preprocessed_work / "splits.json").read_text())  # made on first use
    assert (record.train_ids, record.val_ids) == (splits[0]["train"], splits[0]["val"])
    assert record.fold_paths.root == preprocessed_work / "models" / "3d_fullres" / "fold_0"
    assert record.data_dir == preprocessed_work / "preprocessed" / record.config_plan.data_identifier
    assert record.device == torch.device("cpu") and not record.dist.enabled and record.previous_stage is None
    assert record.num_channels == 1 and record.batch_per_rank == 3 and record.run_name == "PhantomsCT/3d_fullres/fold_0"
    assert record.deep_supervision == record.config_plan.network.deep_supervision and not record.show_progress
    drawn = torch.rand(3)
    open_run(preprocessed_work, _config(seed=5), show_progress=True)
    assert torch.equal(torch.rand(3), drawn)  # seed + rank 0, again
    with pytest.raises(AttributeError):
        record.plan = record.plan  # type: ignore[misc]  # frozen
    assert not open_run(preprocessed_work, _config(deep_supervision=False)).deep_supervision
    with pytest.raises(NnsegError, match="fold 7 requested"):
        open_run(preprocessed_work, _config(fold=7))


def test_network_recipe_and_parts_of_a_fresh_run(preprocessed_work: Path) -> None:
    record = open_run(preprocessed_work, _config(initial_lr=0.02), show_progress=False)
    assert resume_checkpoint(record) is None  # nothing to resume yet
    network, pretrained = initial_network(record, resuming=False)
    assert pretrained is None and next(network.parameters()).device == record.device
    recipe = run_recipe(record, None, planned_epochs=3)
    assert recipe.name == "small_budget+initial_lr" and recipe.initial_lr == 0.02  # the cpu preset's, overridden
    untouched = copy.deepcopy(network.state_dict())
    parts = build_parts(record, network, _augment(record), recipe)
    assert parts.network is network and parts.model is network  # neither compiled nor wrapped for DDP
    assert not parts.use_amp and not parts.scaler.is_enabled() and parts.cascade_augment is None
    assert isinstance(parts.optimizer, torch.optim.AdamW) and parts.optimizer.param_groups[0]["lr"] == 0.02
    weights = parts.loss.class_weights
    assert weights is not None and parts.full_adjustment is not None  # small_budget weighs the cross-entropy
    assert parts.full_adjustment.offsets == pytest.approx((-torch.log(weights)).tolist())
    assert parts.trial_offsets.shape == (len(ADJUSTMENT_STRENGTHS), 1, record.plan.num_classes, 1, 1, 1)
    heads = parts.full_adjustment.biases
    assert all(not torch.equal(network.state_dict()[key], untouched[key]) for key in heads)  # the prior, fresh only
    again = build_parts(record, network, _augment(record), recipe, fresh=False)
    assert all(torch.equal(again.network.state_dict()[key], network.state_dict()[key]) for key in heads)


def test_trial_offsets_are_one_row_per_strength() -> None:
    assert torch.equal(trial_offsets(None, 3, 2, torch.device("cpu")), torch.zeros(1, 1, 3, 1, 1))
    adjustment = LogitAdjustment(("head.bias",), (0.0, -1.0, -2.0))
    offsets = trial_offsets(adjustment, 3, 3, torch.device("cpu"))
    assert offsets.shape == (len(ADJUSTMENT_STRENGTHS), 1, 3, 1, 1, 1)
    for strength, row in zip(ADJUSTMENT_STRENGTHS, offsets):
        assert row.flatten().tolist() == pytest.approx([0.0, -strength, -2 * strength])


def test_time_budget_probes_the_network_at_the_runs_batch_and_patch(preprocessed_work: Path) -> None:
    record = open_run(preprocessed_work, _config(epochs=40, time_budget=600), show_progress=False)
    network, _ = initial_network(record, resuming=False)
    before = copy.deepcopy(network.state_dict())
    budget = TimeBudget.probe(network, _augment(record), record)
    assert budget.seconds == 600 and budget.max_epochs == 40 and budget.epoch_estimate_s > 0
    assert budget.final_reserve_s >= len(record.val_ids) * 0.5  # the fold's validation cases are reserved for
    assert all(torch.equal(value, before[key]) for key, value in network.state_dict().items())  # probed a copy
    assert 1 <= budget.fit(0.0, 0) <= 40


class _Recorder:
    """A tracker that keeps its calls."""

    def __init__(self) -> None:
        self.artifacts: list[tuple[str, str | None]] = []
        self.models: list[tuple[str, dict]] = []

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append((Path(path).name, artifact_path))

    def log_model(self, name, checkpoint, **details) -> None:
        self.models.append((name, details))


def test_tracking_helpers_take_the_record(preprocessed_work: Path) -> None:
    record = open_run(preprocessed_work, _config(), show_progress=False)
    recipe = RECIPES["nnunet"]
    tracker, run_id = start_tracker(record, recipe, 3, resume_run_id="earlier")
    assert isinstance(tracker, NullTracker) and run_id == "earlier"  # tracking off: the id is kept for a resume
    parameters = run_parameters(record, recipe, 3)
    assert parameters["recipe"]["name"] == "nnunet" and parameters["planned_epochs"] == 3
    assert parameters["trainer"]["train_cases"] == len(record.train_ids) and parameters["trainer"]["world_size"] == 1
    assert parameters["fingerprint"]["cases"] == 6 and "pretrained" not in parameters
    recorder = _Recorder()
    record.fold_paths.root.mkdir(parents=True, exist_ok=True)  # the fold lock made it already
    log_finished_fold(record, recorder, 3, {"mean_dice": 0.5})  # type: ignore[arg-type]
    assert ("plans.json", None) in recorder.artifacts and (record.fold_paths.final.name, "model") in recorder.artifacts
    ((name, details),) = recorder.models
    assert name == "PhantomsCT-3d_fullres-fold_0" and details["step"] == 2
    assert details["metrics"] == {"final_val_mean_dice": 0.5} and details["params"]["epochs"] == 3
