"""TrainConfig: every trainer hyper-parameter as data (variants are options, not subclasses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """How to train one fold. Defaults are nnU-Net's recipe.

    Attributes:
        configuration: plan configuration ("3d_fullres", "2d", ...).
        fold: fold index, or "all" to train on every case (no validation cases).
        epochs: epochs (1000).
        iters_per_epoch: training iterations per epoch (250).
        val_iters: validation iterations per epoch for the pseudo-Dice (50).
        batch_size: override the plan's batch size (None: the plan's).
        initial_lr / momentum / weight_decay: SGD with Nesterov momentum (0.01, 0.99, 3e-5).
        poly_exponent: learning rate ``initial_lr * (1 - epoch / epochs) ** poly_exponent`` (0.9).
        oversample_foreground: fraction of each batch forced to contain foreground (1/3).
        deep_supervision: train with deep supervision (True).
        device: "auto", "cpu", "cuda" or "cuda:N".
        mixed_precision: autocast fp16 on CUDA (never on CPU, where bf16/fp16 are slower here).
        compile: wrap the network in torch.compile.
        loader_threads: background threads that cut patches from the memory-mapped cache.
        seed: seed of every random choice (patches, augmentation, initialisation).
        max_wall_time_s: stop after the epoch that crosses this budget (None: no budget).
        tracking_uri: MLflow tracking URI (None: MLFLOW_TRACKING_URI or sqlite under the work folder).
        experiment: MLflow experiment name (None: the dataset name).
        tracking: log to MLflow at all.
        final_validation: predict the validation cases with the sliding window at the end.
    """

    configuration: str = "3d_fullres"
    fold: int | str = 0
    epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters: int = 50
    batch_size: int | None = None
    initial_lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    oversample_foreground: float = 1 / 3
    deep_supervision: bool = True
    device: str = "auto"
    mixed_precision: bool = True
    compile: bool = False
    loader_threads: int = 2
    seed: int = 12345
    max_wall_time_s: float | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    tracking: bool = True
    final_validation: bool = True

    def __post_init__(self) -> None:
        from nnseg import options

        options.positive_int("epochs", self.epochs)
        options.positive_int("iters_per_epoch", self.iters_per_epoch)
        options.non_negative_int("val_iters", self.val_iters)
        if self.batch_size is not None:
            options.positive_int("batch_size", self.batch_size)
        options.positive_float("initial_lr", self.initial_lr)
        options.unit_interval("momentum", self.momentum)
        options.non_negative_float("weight_decay", self.weight_decay)
        options.unit_interval("oversample_foreground", self.oversample_foreground)
        options.fold("fold", self.fold)
        options.device("device", self.device)
        options.positive_int("loader_threads", self.loader_threads)
        if self.max_wall_time_s is not None:
            options.positive_float("max_wall_time_s", self.max_wall_time_s)

    @property
    def fold_name(self) -> str:
        return f"fold_{self.fold}"
