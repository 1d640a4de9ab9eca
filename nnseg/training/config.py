"""TrainConfig: every trainer hyper-parameter as data (variants are options, not subclasses).

Each field is declared once with its default, its ``nnseg train`` option, its help and its
check (:func:`nnseg.options.option`); the command line is generated from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from nnseg import options
from nnseg.options import option
from nnseg.recipes import SHORT_RUN_ITERATIONS, optimizer_name, recipe_name
from nnseg.workspace import fold_folder_name


def _checkpoint_file(name: str, value: Any) -> str:
    """A checkpoint path, kept as text (the config is stored in checkpoints as plain data); it is read, and its
    existence checked, when a fresh run starts from it (a resumed run does not need it)."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not text:
        raise options.OptionError(f"--{name}: expected a checkpoint file, got {value!r}")
    return str(text)


#: training iterations per validation patch by default: nnU-Net's 250 iterations and 50 patches per epoch. A
#: short CPU epoch (25 iterations) then validates 5 patches, not 50 (which cost as much as its training)
VALIDATION_SHARE = 5


@dataclass(frozen=True)
class TrainConfig:
    """How to train one fold. Defaults are nnU-Net's schedule; the recipe is chosen by ``recipe`` (see
    :mod:`nnseg.recipes`) and single fields of it are overridden by the options set here."""

    configuration: str = option("3d_fullres", "plan configuration", flag="--config", metavar="NAME")
    fold: int | str = option(
        0, "fold index (0-4) or 'all' (train on every case, no validation)", validate=options.fold, metavar="K"
    )
    epochs: int = option(1000, "epochs", validate=options.positive_int, metavar="N")
    iters_per_epoch: int = option(250, "training iterations per epoch", validate=options.positive_int, metavar="N")
    val_iters: int | None = option(
        None,
        "validation patches per epoch for the pseudo-Dice (default: one per 5 training iterations, nnU-Net's 50 "
        "per 250, at least 1; 0: none)",
        validate=options.non_negative_int,
        metavar="N",
    )
    batch_size: int | None = option(
        None, "patches per step (none: the plan's)", validate=options.positive_int, metavar="N"
    )
    recipe: str = option(
        "auto",
        "training recipe: nnunet (SGD 0.99, poly per epoch; tuned for 250k GPU iterations), small_budget "
        "(AdamW with warm-up; finds small structures in a few hundred iterations) or auto (the plan preset's "
        f"recipe, else small_budget for runs of <= {SHORT_RUN_ITERATIONS:,} iterations); the options below "
        "override single fields of it",
        validate=recipe_name,
        metavar="NAME",
    )
    optimizer: str | None = option(None, "sgd or adamw (none: the recipe's)", validate=optimizer_name, metavar="NAME")
    initial_lr: float | None = option(
        None, "peak learning rate (none: the recipe's)", flag="--lr", validate=options.positive_float, metavar="LR"
    )
    momentum: float | None = option(
        None, "SGD momentum or AdamW beta1 (none: the recipe's)", validate=options.unit_interval
    )
    weight_decay: float | None = option(None, "weight decay (none: the recipe's)", validate=options.non_negative_float)
    warmup_fraction: float | None = option(
        None,
        "fraction of the iterations with a linear warm-up of the learning rate (none: the recipe's)",
        flag="--warmup",
        validate=options.unit_interval,
        metavar="FRACTION",
    )
    poly_exponent: float | None = option(
        None,
        "learning rate initial_lr * (1 - progress) ** poly_exponent after the warm-up (none: the recipe's)",
        validate=options.positive_float,
    )
    topk_percent: float | None = option(
        None,
        "cross-entropy over the hardest K %% of voxels, 100 for all (none: the recipe's)",
        flag="--topk",
        validate=options.percent,
        metavar="K",
    )
    class_weight_power: float | None = option(
        None,
        "weigh the cross-entropy of each class by frequency ** -POWER (0: unweighted; none: the recipe's)",
        validate=options.non_negative_float,
        metavar="POWER",
    )
    head_bias_prior: bool | None = option(
        None,
        "yes: start the output biases at log(class frequency) (none: the recipe's)",
        validate=options.yes_no,
        metavar="yes|no",
    )
    oversample_foreground: float | None = option(
        None,
        "fraction of each batch forced to contain foreground (none: the recipe's)",
        validate=options.unit_interval,
        metavar="FRACTION",
    )
    deep_supervision: bool = option(True, "train without deep supervision")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", validate=options.device)
    mixed_precision: bool = option(True, "disable fp16 autocast on CUDA (never used on CPU)", flag="--no-amp")
    compile: bool = option(False, "torch.compile the network")
    loader_threads: int = option(
        2, "threads cutting patches from the memory-mapped cache", validate=options.positive_int, metavar="N"
    )
    seed: int = option(
        12345, "seed of every random choice (patches, augmentation, initialisation)", validate=options.integer
    )
    max_hours: float | None = option(
        None,
        "stop after the epoch that crosses this wall-time budget (none: no limit)",
        validate=options.positive_float,
        metavar="HOURS",
    )
    time_budget: float | None = option(
        None,
        "train for this long, validation included (e.g. 90s, 20m, 1.5h): the step time is measured in the "
        "first iterations and the epochs (at most --epochs) and the schedule are fitted to the budget",
        validate=options.duration,
        metavar="DURATION",
    )
    pretrained: str | None = option(
        None,
        "start from this checkpoint of another dataset (a checkpoint_*.pt): tensors of the same shape are copied, "
        "the first convolution is adapted to the channels and the heads to the classes; the plan must have the "
        "source's network (nnseg plan --transfer-plan). Not applied again when the run resumes",
        validate=_checkpoint_file,
        metavar="CKPT",
    )
    tracking_uri: str | None = option(
        None, "MLflow URI (none: MLFLOW_TRACKING_URI or sqlite:///<work>/mlflow.db)", metavar="URI"
    )
    experiment: str | None = option(None, "MLflow experiment (none: the dataset name)", metavar="NAME")
    tracking: bool = option(True, "do not log to MLflow")
    final_validation: bool = option(True, "skip the sliding-window validation of the fold's cases at the end")

    def __post_init__(self) -> None:
        options.validate_fields(self)

    @property
    def validation_patches(self) -> int:
        """Validation patches per epoch: ``val_iters``, or one per :data:`VALIDATION_SHARE` training iterations."""
        if self.val_iters is not None:
            return self.val_iters
        return max(1, self.iters_per_epoch // VALIDATION_SHARE)

    @property
    def fold_name(self) -> str:
        return fold_folder_name(self.fold)

    @property
    def max_wall_time_s(self) -> float | None:
        return None if self.max_hours is None else self.max_hours * 3600
