"""How a training run is put together, before its first epoch: the :class:`~nnseg.training.run_record.RunRecord`
(:func:`open_run`), the checkpoint it resumes (:func:`resume_checkpoint`), the initial network (:func:`initial_network`:
built, ``--pretrained`` transferred, on the device), the recipe (:func:`run_recipe`) and the :class:`TrainingParts`
the steps use (:func:`build_parts`: model wrapper, augmentation, loss, optimizer, logit adjustment).

The trainer (:mod:`nnseg.training.loop`) calls them in that order; between the network and the recipe it fits the
number of epochs to ``--time-budget`` (:meth:`nnseg.training.budget.TimeBudget.probe`), since the recipe's
schedule and choice follow the run's length.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from nnseg.atomic import remove_stale_temporaries
from nnseg.checkpoint import Checkpoint, LogitAdjustment
from nnseg.distributed import DistributedContext, resolve_device
from nnseg.errors import NnsegError
from nnseg.locks import FolderLock
from nnseg.networks.plans import UNetPlusPlusPlan
from nnseg.networks.registry import build_network
from nnseg.planning.plan import Plan
from nnseg.recipes import ADJUSTMENT_STRENGTHS, RECIPE_FIELDS, Recipe, choose_recipe, resumed_recipe
from nnseg.training.augment import TrainingAugmentation
from nnseg.training.augment.cascade import CascadeAugmentation
from nnseg.training.config import TrainConfig
from nnseg.training.data import class_frequencies, previous_stage_files
from nnseg.training.heads import logit_adjustment, set_head_bias_to_prior
from nnseg.training.losses import SegmentationLoss
from nnseg.training.pretrained import TransferReport, start_from_pretrained
from nnseg.training.run_record import RunRecord
from nnseg.training.run_setup import fold_cases, resumable_checkpoint
from nnseg.workspace import FoldPaths, Workspace

#: the generators of different ranks start this far apart
RANK_SEED_STRIDE = 7919


def open_run(work: str | os.PathLike | None, config: TrainConfig, *, show_progress: bool = True) -> RunRecord:
    """The run's record: workspace, plan, device and process group (joined under torchrun), the fold's cases (its
    split made on first use) and a cascade's previous-stage inputs. Removes the fold's stale temporaries and seeds
    this process's random streams (``seed + rank``); NnsegError for what cannot train."""
    workspace = Workspace.at(work)
    plan = Plan.load(workspace.plans)
    plan.configuration(config.configuration)  # an unknown configuration fails before the fold is touched
    device = resolve_device(config.device)
    dist = DistributedContext.from_launcher(device.type)
    device = dist.local_device(device)
    fold_paths = workspace.fold_paths(config.configuration, config.fold)
    # one training per fold: a second process stops here, before it reads or writes anything of the fold
    lock = FolderLock(fold_paths.lock, f"fold folder {fold_paths.root}").acquire() if dist.is_main else None
    try:
        return _record(workspace, plan, config, fold_paths, device, dist, show_progress, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _record(
    workspace: Workspace,
    plan: Plan,
    config: TrainConfig,
    fold_paths: FoldPaths,
    device: torch.device,
    dist: DistributedContext,
    show_progress: bool,
    lock: FolderLock | None,
) -> RunRecord:
    config_plan = plan.configuration(config.configuration)
    remove_stale_temporaries(fold_paths.root)
    remove_stale_temporaries(fold_paths.validation)
    if config_plan.next_stage is not None:
        remove_stale_temporaries(fold_paths.next_stage(config_plan.next_stage))
    cases = fold_cases(workspace, plan, config_plan, config.configuration, config.fold, dist)
    previous_stage = None
    if config_plan.previous_stage is not None:  # every case's segmentation by the previous stage's fold
        case_ids = sorted(set(cases.train_ids) | set(cases.val_ids))
        previous_stage = previous_stage_files(
            workspace, config_plan.previous_stage, config.configuration, case_ids, cases.splits
        )
    torch.manual_seed(config.seed + dist.rank)
    np.random.seed(config.seed + dist.rank)
    random.seed(config.seed + dist.rank)
    # deep supervision where the plan has it, unless the run turns it off (--no-deep-supervision)
    deep_supervision = config.deep_supervision and config_plan.network.deep_supervision
    network_plan = config_plan.network
    if isinstance(network_plan, UNetPlusPlusPlan) and network_plan.is_pruned and not deep_supervision:
        raise NnsegError(
            "--no-deep-supervision: the plan prunes its UNet++ (prune_level), whose pruned head only "
            "deep supervision trains; drop the option or set prune_level to null in plans.json"
        )
    return RunRecord(
        config=config,
        workspace=workspace,
        plan=plan,
        config_plan=config_plan,
        fold_paths=fold_paths,
        data_dir=workspace.preprocessed(config_plan.data_identifier),
        cases=cases,
        previous_stage=previous_stage,
        device=device,
        dist=dist,
        deep_supervision=deep_supervision,
        show_progress=show_progress and dist.is_main,
        lock=lock,
    )


def resume_checkpoint(record: RunRecord) -> Checkpoint | None:
    """The fold's latest checkpoint when there is one (checked: same fold, same plan, a training state), else None."""
    latest = record.fold_paths.latest
    if not latest.is_file():
        return None
    config = record.config
    return resumable_checkpoint(
        latest, record.plan, config.configuration, config.fold, record.device, record.workspace.plans
    )


def initial_network(record: RunRecord, *, resuming: bool) -> tuple[torch.nn.Module, TransferReport | None]:
    """The plan's network on the run's device, with ``--pretrained`` transferred into it on a fresh start only (a
    resumed run's checkpoint holds its weights); the transfer's report, or None."""
    config = record.config
    network = build_network(
        record.config_plan.network,
        record.num_channels,
        record.plan.num_classes,
        deep_supervision=record.deep_supervision,
    )
    pretrained = start_from_pretrained(
        network, config.pretrained, record.plan, config.configuration, resuming=resuming, show=record.dist.is_main
    )
    return network.to(record.device), pretrained


def run_recipe(record: RunRecord, checkpoint: Checkpoint | None, planned_epochs: int) -> Recipe:
    """The run's recipe: a resumed run keeps its own; options override single fields of a new one."""
    config = record.config
    overrides = {name: getattr(config, name) for name in RECIPE_FIELDS if hasattr(config, name)}
    if checkpoint is not None and checkpoint.training is not None:
        return resumed_recipe(checkpoint.training.recipe, overrides, record.fold_paths.latest)
    return choose_recipe(
        config.recipe,
        preset_recipe=record.plan.preset_values.training_recipe,
        total_iterations=planned_epochs * config.iters_per_epoch,
    ).with_overrides(**overrides)


@dataclass(frozen=True)
class TrainingParts:
    """What the training and validation steps use; the objects keep their own state (weights, moments, streams).

    Attributes:
        network: the bare network (its weights are what checkpoints hold).
        model: what the steps call: the network, compiled (``--compile``) and wrapped for DDP under torchrun.
        pretrained: the ``--pretrained`` transfer of a fresh run, else None.
        augment: the training augmentation at the plan's patch size.
        cascade_augment: a cascade's augmentation of the previous stage's segmentation, else None.
        generator: the augmentation's and cascade's random stream (``seed + 7919 x rank``).
        use_amp: float16 autocast and a grad scaler (``--mixed-precision`` on CUDA).
        scaler: the grad scaler (a no-op without ``use_amp``).
        recipe: optimizer, schedule, loss weighting and head-bias prior.
        loss: the segmentation loss (class-weighted as the recipe says).
        optimizer: over the network's parameters.
        full_adjustment: a class-weighted run's logit adjustment at strength 1, else None.
        trial_offsets: (strengths, 1, classes, 1, ...) offsets the validation tries (one row of zeros without an
            adjustment).
    """

    network: torch.nn.Module
    model: torch.nn.Module
    pretrained: TransferReport | None
    augment: TrainingAugmentation
    cascade_augment: CascadeAugmentation | None
    generator: torch.Generator
    use_amp: bool
    scaler: torch.amp.GradScaler
    recipe: Recipe
    loss: SegmentationLoss
    optimizer: torch.optim.Optimizer
    full_adjustment: LogitAdjustment | None
    trial_offsets: torch.Tensor


def build_parts(
    record: RunRecord,
    network: torch.nn.Module,
    augment: TrainingAugmentation,
    recipe: Recipe,
    *,
    pretrained: TransferReport | None = None,
    fresh: bool = True,
) -> TrainingParts:
    """The steps' parts around ``network`` (on the device). The class frequencies of the training cases are read
    when the recipe weighs the loss or sets the head bias; a ``fresh`` run's heads start at the prior."""
    config, scheme, device = record.config, record.scheme, record.device
    model: torch.nn.Module = network
    if config.compile:
        model = torch.compile(network)  # type: ignore[assignment]
    if record.dist.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    use_amp = config.mixed_precision and device.type == "cuda"
    frequencies = None
    if recipe.head_bias_prior or recipe.class_weight_power:
        frequencies = class_frequencies(record.data_dir, record.train_ids, scheme)
    weights = None if frequencies is None else recipe.class_weights(frequencies, scheme.objective)
    full_adjustment = logit_adjustment(network, weights)
    if fresh and recipe.head_bias_prior and frequencies is not None:
        set_head_bias_to_prior(network, torch.from_numpy(frequencies).float(), scheme.objective)
    return TrainingParts(
        network=network,
        model=model,
        pretrained=pretrained,
        augment=augment,
        cascade_augment=CascadeAugmentation() if record.previous_stage is not None else None,
        generator=torch.Generator(device="cpu").manual_seed(config.seed + RANK_SEED_STRIDE * record.dist.rank),
        use_amp=use_amp,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        recipe=recipe,
        loss=SegmentationLoss(
            batch_dice=record.config_plan.batch_dice,
            topk_percent=recipe.topk_percent,
            class_weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
            scheme=scheme,
        ),
        optimizer=recipe.make_optimizer(network.parameters()),
        full_adjustment=full_adjustment,
        trial_offsets=trial_offsets(
            full_adjustment, record.plan.num_classes, len(record.config_plan.patch_size), device
        ),
    )


def trial_offsets(
    adjustment: LogitAdjustment | None, num_classes: int, spatial_dims: int, device: torch.device
) -> torch.Tensor:
    """(strengths, 1, classes, 1, ...) logit offsets, one row per strength of
    :data:`~nnseg.recipes.ADJUSTMENT_STRENGTHS`; a single row of zeros without an adjustment."""
    strengths = ADJUSTMENT_STRENGTHS if adjustment is not None else (0.0,)
    offsets = [0.0] * num_classes if adjustment is None else adjustment.offsets
    table = torch.tensor(strengths)[:, None] * torch.tensor(offsets)[None]
    return table.to(device).view(len(strengths), 1, -1, *([1] * spatial_dims))
