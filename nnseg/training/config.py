"""TrainConfig: every trainer hyper-parameter as data (variants are options, not subclasses).

Each field is declared once with its default, its ``nnseg train`` option, its help and its
check (:func:`nnseg.options.option`); the command line is generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnseg import options
from nnseg.options import option
from nnseg.workspace import fold_folder_name


@dataclass(frozen=True)
class TrainConfig:
    """How to train one fold. Defaults are nnU-Net's recipe (the help of each field says what it does)."""

    configuration: str = option("3d_fullres", "plan configuration", flag="--config", metavar="NAME")
    fold: int | str = option(
        0, "fold index (0-4) or 'all' (train on every case, no validation)", validate=options.fold, metavar="K"
    )
    epochs: int = option(1000, "epochs", validate=options.positive_int, metavar="N")
    iters_per_epoch: int = option(250, "training iterations per epoch", validate=options.positive_int, metavar="N")
    val_iters: int = option(
        50, "validation patches per epoch for the pseudo-Dice", validate=options.non_negative_int, metavar="N"
    )
    batch_size: int | None = option(
        None, "patches per step (none: the plan's)", validate=options.positive_int, metavar="N"
    )
    initial_lr: float = option(
        0.01,
        "initial learning rate (SGD, Nesterov, poly decay)",
        flag="--lr",
        validate=options.positive_float,
        metavar="LR",
    )
    momentum: float = option(0.99, "SGD momentum", validate=options.unit_interval)
    weight_decay: float = option(3e-5, "SGD weight decay", validate=options.non_negative_float)
    poly_exponent: float = option(
        0.9, "learning rate initial_lr * (1 - epoch / epochs) ** poly_exponent", validate=options.positive_float
    )
    oversample_foreground: float = option(
        1 / 3, "fraction of each batch forced to contain foreground", validate=options.unit_interval, metavar="FRACTION"
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
    tracking_uri: str | None = option(
        None, "MLflow URI (none: MLFLOW_TRACKING_URI or sqlite:///<work>/mlflow.db)", metavar="URI"
    )
    experiment: str | None = option(None, "MLflow experiment (none: the dataset name)", metavar="NAME")
    tracking: bool = option(True, "do not log to MLflow")
    final_validation: bool = option(True, "skip the sliding-window validation of the fold's cases at the end")

    def __post_init__(self) -> None:
        options.validate_fields(self)

    @property
    def fold_name(self) -> str:
        return fold_folder_name(self.fold)

    @property
    def max_wall_time_s(self) -> float | None:
        return None if self.max_hours is None else self.max_hours * 3600
