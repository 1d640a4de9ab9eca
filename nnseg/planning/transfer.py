"""Plan a dataset with another dataset's network, so that its checkpoints fit (``nnseg plan --transfer-plan``).

The new dataset is planned as usual first: its fingerprint, target spacing, axis order, median shape and
per-channel normalization are its own (a CT source's intensity statistics would be wrong for MR). Then each
configuration takes from the source plan what the pretrained weights and their training were planned for:

- the **network plan** (architecture, stages, features, kernels, strides): the weights fit only this;
- the **patch size**: the size the topology was derived for (its pooling stops at feature maps of >= 4 voxels;
  another patch would need another topology), and it is divisible by the strides by construction;
- the **batch size** and ``budget_used``: the same network on the same patch has the same footprint, so the
  source's batch fits the same budget.

The spacing is deliberately *not* taken over (nnU-Net's ``move_plans_between_datasets`` copies the whole plan,
spacing and CT statistics included): resampling the new images to another dataset's resolution can throw away
detail the new labels were drawn at (or inflate them), whereas convolutions fine-tune well across moderately
different voxel sizes. Configurations the source has not planned are dropped (there are no weights for them).

Where the topology came from is recorded without changing the plan schema: the plan's ``preset`` becomes
``transfer:<source dataset>`` (``preset_values`` keep the constants the new dataset was planned with).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from nnseg.errors import NnsegError
from nnseg.planning.plan import Plan, PlanError
from nnseg.workspace import Workspace

TRANSFER_PRESET_PREFIX = "transfer:"


@dataclass(frozen=True)
class TransferredPlan:
    """The new dataset's plan with the source's topology, and one line per decision."""

    plan: Plan
    source: Path
    notes: tuple[str, ...]


def load_source_plan(source_work: str | os.PathLike) -> tuple[Plan, Path]:
    """The plan of the work folder ``source_work`` (``--transfer-plan``), and its path."""
    path = Workspace.at(source_work).plans
    if not path.is_file():
        raise NnsegError(
            f"--transfer-plan {source_work}: {path} not found; give the work folder of the pretrained model "
            "(where `nnseg plan` wrote the source dataset's plan)"
        )
    return Plan.load(path), path


def transfer_topology(plan: Plan, source: Plan, source_path: str | os.PathLike = "") -> TransferredPlan:
    """``plan`` (the new dataset's own) with each configuration's network, patch and batch from ``source``.

    Raises:
        PlanError: the two plans share no configuration, or a shared one differs in dimensions.
    """
    where = source_path or source.dataset_name
    configurations = {}
    notes = []
    for name, config in plan.configurations.items():
        if name not in source.configurations:
            notes.append(f"{name}: dropped (the source plan {where} has no {name}, so no weights for it)")
            continue
        theirs = source.configurations[name]
        if theirs.dimensions != config.dimensions:
            raise PlanError(f"{where}: configuration {name} is {theirs.dimensions}D there, {config.dimensions}D here")
        configurations[name] = replace(
            config,
            network=theirs.network,
            patch_size=theirs.patch_size,
            batch_size=theirs.batch_size,
            budget_used=theirs.budget_used,
        )
        notes.append(
            f"{name}: {theirs.network.architecture} network, patch {list(theirs.patch_size)} and batch "
            f"{theirs.batch_size} from {source.dataset_name}; spacing {[round(s, 3) for s in config.spacing]} "
            "and normalization of this dataset"
        )
    if not configurations:
        raise PlanError(
            f"{where}: plans {', '.join(source.configurations)}, this dataset {', '.join(plan.configurations)}: no "
            "configuration in common to transfer"
        )
    if "3d_lowres" not in configurations:  # no cascade without its first stage
        configurations = {n: replace(c, previous_stage=None, next_stage=None) for n, c in configurations.items()}
    transferred = replace(plan, preset=f"{TRANSFER_PRESET_PREFIX}{source.dataset_name}", configurations=configurations)
    transferred.validate()
    return TransferredPlan(transferred, Path(source_path), tuple(notes))
