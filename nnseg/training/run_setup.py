"""What a training run starts from (its cases: the fold's split; the checkpoint it resumes) and its MLflow run
(started or resumed; the finished fold's files and logged model).

Each check here stops the run before any epoch with a message naming the file and the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nnseg.checkpoint import Checkpoint
from nnseg.distributed import DistributedContext
from nnseg.errors import NnsegError
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.planning.splits import load_or_create_splits
from nnseg.preprocessing.preprocess import is_done, preprocessing_hash
from nnseg.recipes import Recipe
from nnseg.training.pretrained import TransferReport
from nnseg.training.run_parameters import run_parameters
from nnseg.training.run_record import FoldCases, RunRecord
from nnseg.workspace import Workspace

if TYPE_CHECKING:
    from nnseg.tracking import Tracker


def fold_cases(
    workspace: Workspace,
    plan: Plan,
    config_plan: ConfigurationPlan,
    configuration: str,
    fold: int | str,
    dist: DistributedContext,
) -> FoldCases:
    """The fold's cases, once every case of the plan is preprocessed with it (splits.json made on first use)."""
    data_dir = workspace.preprocessed(config_plan.data_identifier)
    plan_hash = preprocessing_hash(plan, config_plan)
    found = sorted(p.stem for p in data_dir.glob("*.json") if not p.name.startswith("."))
    cases = [c for c in found if is_done(data_dir, c, plan_hash)]
    fix = f"run `nnseg preprocess --work {workspace.root} --config {configuration}` (it redoes them)"
    if not cases:
        raise NnsegError(f"{data_dir}: no preprocessed cases for {configuration}; {fix}")
    broken = sorted(set(found) - set(cases))
    if broken or len(cases) < plan.num_training_cases:
        what = (
            f"{len(broken)} case(s) damaged or made with another plan ({', '.join(broken[:5])})"
            if broken
            else f"only {len(cases)} of the plan's {plan.num_training_cases} cases are preprocessed"
        )
        raise NnsegError(f"{data_dir}: {what}; {fix}")
    if dist.is_main:  # rank 0 writes splits.json; the others read it after the barrier
        splits = load_or_create_splits(workspace.splits, cases)
    dist.barrier()
    if not dist.is_main:
        splits = load_or_create_splits(workspace.splits, cases)
    if fold == "all":
        return FoldCases(splits, cases, cases)
    if not isinstance(fold, int) or fold >= len(splits):
        raise NnsegError(f"{workspace.splits}: has {len(splits)} folds, fold {fold} requested")
    return FoldCases(splits, list(splits[fold]["train"]), list(splits[fold]["val"]))


def resumable_checkpoint(
    path: Path, plan: Plan, configuration: str, fold: int | str, device: torch.device, plans_file: Path
) -> Checkpoint:
    """``checkpoint_latest.pt`` of this fold, when it can continue under the current plan."""
    checkpoint = Checkpoint.load(path, map_location=device)
    if checkpoint.configuration != configuration or str(checkpoint.fold) != str(fold):
        raise NnsegError(f"{path}: belongs to {checkpoint.configuration} fold {checkpoint.fold}")
    changed = checkpoint.plan_changes(plan)
    if changed:
        raise NnsegError(
            f"{path}: {plans_file} changed since this fold was trained "
            f"({'; '.join(changed[:3])}); resuming would continue old weights on another plan. "
            "Rerun with --fresh to start this fold over (its checkpoints are replaced)"
        )
    if checkpoint.training is None:
        raise NnsegError(f"{path}: holds no training state to resume from; rerun with --fresh to start over")
    return checkpoint


def start_tracker(
    record: RunRecord,
    recipe: Recipe,
    planned_epochs: int,
    *,
    pretrained: TransferReport | None = None,
    resume_run_id: str | None = None,
) -> tuple[Tracker, str | None]:
    """The run's tracker, MLflow on rank 0 (``resume_run_id``: a resumed run continues its MLflow run) else a no-op,
    and the run's id: the tracker's, or ``resume_run_id`` when the server is down (kept to resume later). A new run
    logs its parameters (:func:`~nnseg.training.run_parameters.run_parameters`)."""
    from nnseg.tracking import NullTracker, default_tracking_uri, mlflow_with_fallback

    config, plan = record.config, record.plan
    if not (config.tracking and record.dist.is_main):
        return NullTracker(), resume_run_id
    uri = config.tracking_uri or default_tracking_uri(record.workspace.root)
    tracker = mlflow_with_fallback(uri, config.experiment or plan.dataset_name, record.fold_paths.root)
    tags = {
        "dataset": plan.dataset_name,
        "configuration": config.configuration,
        "fold": str(config.fold),
        "nnseg.version": plan.nnseg_version,
    }
    if pretrained is not None:  # the source of a fine-tuned run, searchable in the UI
        tags["pretrained.sha256"] = pretrained.sha256
    run_id = tracker.start(record.run_name, tags, resume_run_id=resume_run_id) or resume_run_id
    if resume_run_id is None:
        tracker.log_params(run_parameters(record, recipe, planned_epochs, pretrained=pretrained))
    return tracker, run_id


def log_finished_fold(record: RunRecord, tracker: Tracker, epochs_done: int, validation: dict | None) -> None:
    """Log the plan, fingerprint, splits, curves, validation summary and final checkpoint of a fold finished after
    ``epochs_done`` epochs, and the fold as an MLflow logged model with its final metrics (the checkpoint is not
    uploaded twice)."""
    workspace, paths, config = record.workspace, record.fold_paths, record.config
    for path in (workspace.plans, workspace.fingerprint, workspace.splits, paths.curves, paths.validation_summary):
        if path.is_file():
            tracker.log_artifact(path)
    tracker.log_artifact(paths.final, artifact_path="model")
    tracker.log_model(
        f"{record.plan.dataset_name}-{config.configuration}-{config.fold_name}",
        paths.final,
        step=epochs_done - 1,
        metrics={} if validation is None else {"final_val_mean_dice": validation["mean_dice"]},
        params={"configuration": config.configuration, "fold": str(config.fold), "epochs": epochs_done},
    )
