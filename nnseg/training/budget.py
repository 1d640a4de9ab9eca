"""``nnseg train --time-budget``: fit the number of epochs (and so the schedule) to a wall-time budget.

Before the first epoch a probe times a few training steps and one sliding-window forward on
random data of the plan's patch and batch (a copy of the network, so the weights and random
streams of the run are untouched). From these the planner of the budget estimates an epoch
(training steps + validation patches + checkpointing) and the final validation of the fold's
cases (windows x mirrors x forward), and fits the number of epochs, at most ``--epochs``. After
every epoch the fit is redone with the measured epoch times, so a machine that is slower or
faster than the probe says still ends on time; the learning-rate schedule follows the fitted
length, so the rate reaches its end at the last epoch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nnseg.preprocessing.preprocess import open_case
from nnseg.training.augment import TrainingAugmentation
from nnseg.training.losses import SegmentationLoss
from nnseg.training.run_record import RunRecord

#: Per validation case: reading, resampling and writing the label map and probabilities (seconds).
CASE_OVERHEAD_S = 0.5
#: Margin kept free of the budget for start-up variance and the last checkpoint.
SAFETY_FRACTION = 0.015
#: Windows per forward pass of the final validation (the predictor's default ``window_batch``).
VALIDATION_WINDOW_BATCH = 2


@dataclass(frozen=True)
class StepTimes:
    """What the probe measured (seconds)."""

    train_step_s: float
    eval_forward_s: float


def probe_step_times(
    network: torch.nn.Module,
    loss: Callable[[torch.Tensor | list[torch.Tensor], torch.Tensor], torch.Tensor],
    augment: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int,
    channels: int,
    sampling_size: Sequence[int],
    patch_size: Sequence[int],
    num_classes: int,
    device: torch.device,
    warmup_steps: int = 2,
    timed_steps: int = 4,
) -> StepTimes:
    """Time training steps (augmentation, forward, backward, update) and eval forwards on random data.

    ``eval_forward_s`` is per window, measured on batches of ``VALIDATION_WINDOW_BATCH`` windows.
    """
    probe = copy.deepcopy(network).to(device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=1e-6)
    generator = torch.Generator(device="cpu").manual_seed(0)
    image = torch.randn(batch_size, channels, *sampling_size, generator=generator).to(device)
    seg = torch.randint(0, num_classes, (batch_size, 1, *sampling_size), generator=generator).to(device)
    probe.train()
    times = []
    for step in range(warmup_steps + timed_steps):
        started = time.perf_counter()
        image_aug, seg_aug = augment(image, seg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss(probe(image_aug), seg_aug).backward()
        optimizer.step()
        _sync(device)
        if step >= warmup_steps:
            times.append(time.perf_counter() - started)
    probe.eval()
    forwards = []
    with torch.no_grad():  # as the predictor runs them: VALIDATION_WINDOW_BATCH windows (or mirrors) per pass
        windows = torch.randn(VALIDATION_WINDOW_BATCH, channels, *patch_size, generator=generator).to(device)
        for step in range(4):
            started = time.perf_counter()
            probe(windows)
            _sync(device)
            if step:
                forwards.append((time.perf_counter() - started) / VALIDATION_WINDOW_BATCH)
        eval_forward = float(np.median(forwards))
    del probe, optimizer
    return StepTimes(float(np.median(times)), eval_forward)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_windows(shape: Sequence[int], patch: Sequence[int], step_size: float = 0.5) -> int:
    """Sliding windows over ``shape`` (nnU-Net's placement: steps of at most ``step_size`` x patch)."""
    total = 1
    for size, edge in zip(shape, patch):
        if size <= edge:
            continue
        total *= math.ceil((size - edge) / (edge * step_size)) + 1
    return total


@dataclass
class TimeBudget:
    """A wall-time budget and what is known about the cost of an epoch.

    Attributes:
        seconds: the whole budget.
        final_reserve_s: estimated time of the final checkpoint and validation.
        epoch_estimate_s: estimated (then measured) wall time of one epoch.
        max_epochs: the cap (``--epochs``).
    """

    seconds: float
    final_reserve_s: float
    epoch_estimate_s: float
    max_epochs: int

    @classmethod
    def from_probe(
        cls,
        seconds: float,
        times: StepTimes,
        *,
        iters_per_epoch: int,
        val_iters: int,
        validation_shapes: Sequence[Sequence[int]],
        patch_size: Sequence[int],
        mirrors: int,
        max_epochs: int,
    ) -> TimeBudget:
        # a validation patch is a forward of the batch, about a third of a training step
        epoch = iters_per_epoch * times.train_step_s + val_iters * times.train_step_s / 3
        windows = sum(count_windows(shape, patch_size) for shape in validation_shapes)
        final = windows * mirrors * times.eval_forward_s + len(validation_shapes) * CASE_OVERHEAD_S
        return cls(seconds, final, epoch, max_epochs)

    @classmethod
    def probe(cls, network: torch.nn.Module, augment: TrainingAugmentation, record: RunRecord) -> TimeBudget:
        """Probe ``network`` (on the run's device) and ``augment`` at the run's batch and patch; fit the estimate
        to ``--time-budget``, with the final validation of the fold's validation cases (their preprocessed shapes)."""
        config, config_plan = record.config, record.config_plan
        times = probe_step_times(
            network,
            SegmentationLoss(batch_dice=config_plan.batch_dice),  # the recipe's weights cost the same
            augment,
            batch_size=record.batch_per_rank,
            channels=record.num_channels,
            sampling_size=augment.sampling_patch_size,
            patch_size=config_plan.patch_size,
            num_classes=record.plan.num_classes,
            device=record.device,
        )
        shapes = []
        if config.final_validation and config.fold != "all":
            shapes = [open_case(record.data_dir, case_id).seg.shape for case_id in record.val_ids]
        return cls.from_probe(
            float(config.time_budget or 0),
            times,
            iters_per_epoch=config.iters_per_epoch,
            val_iters=config.validation_patches if record.val_ids else 0,
            validation_shapes=shapes,
            patch_size=config_plan.patch_size,
            mirrors=2**config_plan.dimensions,
            max_epochs=config.epochs,
        )

    def fit(self, elapsed_s: float, epochs_done: int, measured_epoch_s: Sequence[float] = ()) -> int:
        """The run's total number of epochs, given the time spent and the epochs done so far."""
        if measured_epoch_s:
            # the latest epochs tell the truth about this machine now (the first one includes warm-up)
            recent = list(measured_epoch_s[1:] or measured_epoch_s)[-5:]
            self.epoch_estimate_s = float(np.median(recent))
        left = self.seconds * (1 - SAFETY_FRACTION) - elapsed_s - self.final_reserve_s
        more = int(left // max(self.epoch_estimate_s, 1e-6))
        return int(np.clip(epochs_done + more, max(1, epochs_done), self.max_epochs))

    def describe(self, epochs: int, iters_per_epoch: int) -> str:
        return (
            f"time budget {_duration(self.seconds)}: an epoch of {iters_per_epoch} iterations takes about "
            f"{self.epoch_estimate_s:.1f} s and the final validation about {self.final_reserve_s:.0f} s, so "
            f"{epochs} epoch(s) ({epochs * iters_per_epoch} iterations); the schedule is fitted to them"
        )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
