"""What one training run is, as plain typed records: the fold's cases and the :class:`RunRecord` (workspace, plan,
options, files, device and process group), read once when the run starts and never changed.

The helpers of a run (:mod:`~nnseg.training.budget`, :mod:`~nnseg.training.run_setup`,
:mod:`~nnseg.training.run_parameters`) take a record and plain values, never the trainer;
:func:`nnseg.training.assembly.open_run` makes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from nnseg.distributed import DistributedContext
from nnseg.labels import LabelScheme
from nnseg.locks import FolderLock
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.training.config import TrainConfig
from nnseg.workspace import FoldPaths, Workspace


@dataclass(frozen=True)
class FoldCases:
    """The cross-validation splits and the cases one fold trains and validates on."""

    splits: list[dict[str, list[str]]]
    train_ids: list[str]
    val_ids: list[str]


@dataclass(frozen=True)
class RunRecord:
    """One fold of one configuration, as the run found it.

    Attributes:
        config: the run's options.
        workspace: the work folder.
        plan: ``plans.json``.
        config_plan: the plan of the trained configuration.
        fold_paths: the fold's files (checkpoints, curves, validation).
        data_dir: the configuration's preprocessed cache.
        cases: the splits and the fold's training and validation cases.
        previous_stage: a cascade stage's input, case id -> the previous stage's cross-validation segmentation on
            this grid; None for a configuration without a ``previous_stage``.
        device: this process's device.
        dist: this process's place in the job.
        deep_supervision: whether the network trains its deep-supervision heads (the plan's flag and the option).
        show_progress: progress bars and per-epoch lines (rank 0 only).
        lock: the fold folder's lock, held by rank 0 for the whole run (None on the other ranks).
    """

    config: TrainConfig
    workspace: Workspace
    plan: Plan
    config_plan: ConfigurationPlan
    fold_paths: FoldPaths
    data_dir: Path
    cases: FoldCases
    previous_stage: dict[str, Path] | None
    device: torch.device
    dist: DistributedContext
    deep_supervision: bool
    show_progress: bool
    lock: FolderLock | None = None

    @property
    def train_ids(self) -> list[str]:
        return self.cases.train_ids

    @property
    def val_ids(self) -> list[str]:
        return self.cases.val_ids

    @property
    def scheme(self) -> LabelScheme:
        """Labels, objective (softmax / sigmoid per region), ignore label."""
        return self.plan.scheme

    @property
    def num_channels(self) -> int:
        """Network input channels: the images' (+ the previous stage's one-hot for a cascade)."""
        return self.plan.input_channels(self.config.configuration)

    @property
    def batch_per_rank(self) -> int:
        """Patches per step on each process: the batch (option, else the plan's) shared by the processes."""
        batch = self.config.batch_size or self.config_plan.batch_size
        return max(1, math.ceil(batch / self.dist.world_size))

    @property
    def run_name(self) -> str:
        """``<dataset>/<configuration>/<fold>``: the MLflow run's name."""
        return f"{self.plan.dataset_name}/{self.config.configuration}/{self.config.fold_name}"
