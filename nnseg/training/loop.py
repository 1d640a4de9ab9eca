"""``nnseg train``: one fold of one configuration, from the preprocessed cache to checkpoints and an MLflow run.

The epoch loop: learning rate (poly) -> ``iters_per_epoch`` training steps on augmented
patches -> ``val_iters`` validation patches (loss + pseudo-Dice, EMA; by default one per 5 training iterations)
-> checkpoints (latest every epoch, best on the EMA pseudo-Dice) -> curves.png and metrics to MLflow.
At the end: ``checkpoint_final.pt`` and a sliding-window prediction of the fold's
validation cases in their original geometry, scored per case and class.

Resume: ``checkpoint_latest.pt`` holds weights, optimizer, grad scaler, epoch, EMA, history,
RNG states and the MLflow run id; a rerun (or ``--resume``) continues from the last
completed epoch in the same MLflow run. Checkpoints are written atomically, so a kill at
any moment loses at most the epoch in progress.

Cascade: a configuration with a ``previous_stage`` (``3d_cascade_fullres``) trains on that stage's
cross-validation predictions of every case (written by its folds' final validation; a missing one stops the run
with the command that makes it): they are cut with the patches, moved with the spatial augmentation as a label,
one-hot encoded and augmented (:mod:`nnseg.training.augment.cascade`), and appended to the image channels.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nnseg.checkpoint import (
    Checkpoint,
    LogitAdjustment,
    TrainingState,
    capture_rng_state,
    load_weights,
    restore_rng_state,
)
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import dice_per_class
from nnseg.progress import progress
from nnseg.recipes import ADJUSTMENT_STRENGTHS, Recipe, choose_adjustment_strength
from nnseg.training.assembly import build_parts, initial_network, open_run, resume_checkpoint, run_recipe
from nnseg.training.augment import TrainingAugmentation, center_crop
from nnseg.training.augment.cascade import append_previous_stage
from nnseg.training.budget import TimeBudget
from nnseg.training.config import TrainConfig
from nnseg.training.data import Batch, PatchSampler, Prefetcher
from nnseg.training.losses import SegmentationLoss
from nnseg.training.plots import plot_curves
from nnseg.training.pretrained import TransferReport
from nnseg.training.run_setup import log_finished_fold, start_tracker
from nnseg.training.validation import pseudo_dice_counts, validate_fold
from nnseg.version import __version__

if TYPE_CHECKING:
    from nnseg.tracking import RunStatus

EMA_DECAY = 0.9
GRAD_CLIP = 12.0


@dataclass(frozen=True)
class TrainResult:
    """Where a training ended."""

    fold_dir: Path
    epochs_done: int
    ema_pseudo_dice: float
    run_id: str | None
    validation: dict | None


class Trainer:
    """Holds the state of one training run; :meth:`run` is the epoch loop.

    What the run is (:attr:`record`) and what its steps use (:attr:`parts`) are assembled by
    :mod:`nnseg.training.assembly`; the trainer keeps the loop's own state (epoch, history, EMA, run id, ...).
    """

    #: the epoch in progress (the next one to train)
    epoch: int
    #: one row of metrics per trained epoch
    history: list[dict[str, Any]]
    #: moving average of the mean pseudo-Dice on the validation patches, and its best value (best checkpoint)
    ema: float | None
    best_ema: float
    #: the MLflow run id (kept across resumes)
    run_id: str | None
    #: wall time of each epoch of this session
    epoch_walls: list[float]
    #: wall time of the earlier sessions of a resumed run
    elapsed_before_s: float
    #: the logit adjustment strength chosen on the validation patches
    adjustment_strength: float

    def __init__(
        self, work: str | os.PathLike | None, config: TrainConfig, *, resume: bool = True, show_progress: bool = True
    ) -> None:
        self.started = time.perf_counter()
        self.record = open_run(work, config, show_progress=show_progress)  # holds the fold's lock until run() ends
        try:
            self._assemble(config, resume)
        except BaseException:
            self.close()
            raise

    def _assemble(self, config: TrainConfig, resume: bool) -> None:
        """Everything after the record: the resumed checkpoint, network, time budget, recipe, parts, tracker."""
        checkpoint = resume_checkpoint(self.record) if resume else None
        state = None if checkpoint is None else checkpoint.training
        network, pretrained = initial_network(self.record, resuming=checkpoint is not None)
        augment = TrainingAugmentation.for_patch_size(self.record.config_plan.patch_size)
        self.budget = TimeBudget.probe(network, augment, self.record) if config.time_budget else None
        self.elapsed_before_s = 0.0 if state is None else state.elapsed_s
        self.planned_epochs = config.epochs  # a resumed run may be given more (or fewer) epochs
        if self.budget is not None:  # rank 0's clock decides for every rank
            fitted = self.budget.fit(self.elapsed_before_s, 0 if state is None else state.epoch + 1)
            self.planned_epochs = self.record.dist.from_main(fitted)
        recipe = run_recipe(self.record, checkpoint, self.planned_epochs)
        self.parts = build_parts(self.record, network, augment, recipe, pretrained=pretrained, fresh=state is None)
        self._start_loop(checkpoint)
        if self.budget is not None and self.record.dist.is_main:
            print(self.budget.describe(self.planned_epochs, config.iters_per_epoch))
        self.tracker, self.run_id = start_tracker(
            self.record, recipe, self.planned_epochs, pretrained=pretrained, resume_run_id=self.run_id
        )

    def close(self) -> None:
        """Leave the process group and release the fold's lock (the end of :meth:`run` does it)."""
        self.record.dist.close()
        if self.record.lock is not None:
            self.record.lock.release()

    # ------------------------------------------------------------------------------------------ state

    def _start_loop(self, checkpoint: Checkpoint | None) -> None:
        """The loop's state: from the start, or where the resumed ``checkpoint`` left off (weights, optimizer,
        grad scaler, history, EMA, MLflow run id and random streams restored)."""
        state = None if checkpoint is None else checkpoint.training
        self.epoch = 0 if state is None else state.epoch + 1
        self.history = [] if state is None else list(state.history)
        self.ema = None if state is None else state.ema
        self.best_ema = -math.inf if state is None else state.best_ema
        self.run_id = None if state is None else state.run_id
        self.epoch_walls = []
        self.adjustment_strength = 0.0 if state is None else choose_adjustment_strength(self.history)
        if checkpoint is None or state is None:
            return
        load_weights(self.network, checkpoint.network_state, self.record.fold_paths.latest)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.parts.scaler.load_state_dict(state.scaler)
        restore_rng_state(state.rng)
        self.parts.generator.set_state(state.generator)

    def _checkpoint(self, epoch: int, *, finished: bool, with_training: bool) -> Checkpoint:
        self.run_id = self.tracker.run_id or self.run_id  # a run created late (server back after an outage)
        training = None
        if with_training:
            training = TrainingState(
                epoch=epoch,
                history=self.history,
                ema=self.ema,
                best_ema=self.best_ema,
                run_id=self.run_id,
                optimizer=self.optimizer.state_dict(),
                scaler=self.parts.scaler.state_dict() if self.parts.use_amp else None,
                rng=capture_rng_state(),
                generator=self.parts.generator.get_state(),
                train_config=asdict(self.record.config),
                recipe=asdict(self.recipe),
                planned_epochs=self.planned_epochs,
                elapsed_s=self._elapsed_s(),
            )
        return Checkpoint(
            plan=self.record.plan,
            configuration=self.record.config.configuration,
            fold=self.record.config.fold,
            network_state=self.network.state_dict(),
            deep_supervision=self.record.deep_supervision,
            finished=finished,
            epochs_trained=epoch + 1,
            nnseg_version=__version__,
            training=training,
            logit_adjustment=self.logit_adjustment,
        )

    @property
    def logit_adjustment(self) -> LogitAdjustment | None:
        """What the checkpoints record for inference: the full adjustment at the chosen strength."""
        return None if self.full_adjustment is None else self.full_adjustment.scaled(self.adjustment_strength)

    # the parts and options by their names (tests, benchmarks)

    @property
    def network(self) -> torch.nn.Module:
        return self.parts.network

    @property
    def model(self) -> torch.nn.Module:
        return self.parts.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts.optimizer

    @property
    def loss(self) -> SegmentationLoss:
        return self.parts.loss

    @property
    def recipe(self) -> Recipe:
        return self.parts.recipe

    @property
    def full_adjustment(self) -> LogitAdjustment | None:
        return self.parts.full_adjustment

    @property
    def pretrained(self) -> TransferReport | None:
        return self.parts.pretrained

    # ------------------------------------------------------------------------------------------ steps

    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and seg on the device; a cascade's previous-stage segmentation rides along as seg channel 1."""
        device = self.record.device
        image = torch.from_numpy(batch.image).to(device, non_blocking=True)
        seg = torch.from_numpy(batch.seg).to(device, non_blocking=True)
        if batch.previous is not None:
            previous = torch.from_numpy(batch.previous).to(device, non_blocking=True)
            seg = torch.cat([seg, previous.to(seg.dtype)], 1)
        return image, seg

    def _with_previous_stage(
        self, image: torch.Tensor, seg: torch.Tensor, *, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, labels): a cascade's seg channel 1 moved to the image as (augmented) one-hot channels."""
        if seg.shape[1] == 1:
            return image, seg
        cascade = self.parts.cascade_augment if augment else None
        return append_previous_stage(image, seg, self.record.scheme, cascade, self.parts.generator)

    def _forward_loss(self, image: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.record.device.type, dtype=torch.float16, enabled=self.parts.use_amp):
            output = self.model(image)
        return output, self.loss(output, seg)

    def train_step(self, batch: Batch) -> float:
        image, seg = self._to_device(batch)
        image, seg = self.parts.augment(image, seg, self.parts.generator)
        image, seg = self._with_previous_stage(image, seg, augment=True)
        self.optimizer.zero_grad(set_to_none=True)
        _, loss = self._forward_loss(image, seg)
        self.parts.scaler.scale(loss).backward()
        self.parts.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
        self.parts.scaler.step(self.optimizer)
        self.parts.scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def val_step(self, batch: Batch) -> tuple[float, torch.Tensor]:
        """Loss and (strengths, 3, classes) pseudo-Dice counts: one row per logit adjustment strength tried."""
        image, seg = self._to_device(batch)
        patch = self.record.config_plan.patch_size
        image, seg = center_crop(image, patch), center_crop(seg, patch)
        image, seg = self._with_previous_stage(image, seg, augment=False)
        output, loss = self._forward_loss(image, seg)
        main = (output[0] if isinstance(output, list) else output).float()
        scheme = self.record.scheme
        classes, target = list(scheme.foreground.values()), seg[:, 0].long()
        counts = []
        for offsets in self.parts.trial_offsets:
            predicted = scheme.segmentation(scheme.probabilities(main + offsets, dim=1), dim=1)
            assert isinstance(predicted, torch.Tensor)
            counts.append(pseudo_dice_counts(predicted, target, classes, scheme.ignore_value))
        return float(loss), torch.stack(counts)

    # ------------------------------------------------------------------------------------------ loop

    def _samplers(self) -> tuple[Prefetcher, Prefetcher | None]:
        run, config_plan = self.record, self.record.config_plan
        region = self.parts.augment.sampling_patch_size
        seed = run.config.seed + 1000 * run.dist.rank + self.epoch
        train = PatchSampler(
            run.data_dir,
            run.train_ids,
            region,
            run.batch_per_rank,
            dimensions=config_plan.dimensions,
            oversample_foreground=self.recipe.oversample_foreground,
            seed=seed,
            previous_stage=run.previous_stage,
            border=[r - p for r, p in zip(region, config_plan.patch_size)],
        )
        val = None
        if run.config.validation_patches and run.val_ids:
            val = PatchSampler(
                run.data_dir,
                run.val_ids,
                config_plan.patch_size,
                run.batch_per_rank,
                dimensions=config_plan.dimensions,
                oversample_foreground=self.recipe.oversample_foreground,
                seed=seed + 1,
                previous_stage=run.previous_stage,
            )
        threads = max(1, run.config.loader_threads)
        return Prefetcher(train, threads=threads), (Prefetcher(val, threads=1) if val else None)

    def run(self) -> TrainResult:
        """Train from the current epoch to the end (or the wall-time budget), then validate."""
        started, dist = time.perf_counter(), self.record.dist
        train_loader = val_loader = None
        status: RunStatus = "FAILED"
        try:
            train_loader, val_loader = self._samplers()
            while self.epoch < self.planned_epochs:
                epoch_started = time.perf_counter()
                self._epoch(train_loader, val_loader)
                self.epoch_walls.append(time.perf_counter() - epoch_started)
                if self.budget is not None:
                    fitted = dist.from_main(self.budget.fit(self._elapsed_s(), self.epoch, self.epoch_walls))
                    if fitted != self.planned_epochs and dist.is_main:  # the epoch logged the fit before it
                        self.tracker.log_metrics({"planned_epochs": float(fitted)}, step=self.epoch - 1)
                    self.planned_epochs = fitted
                limit = self.record.config.max_wall_time_s
                if limit and time.perf_counter() - started > limit:
                    if dist.is_main:
                        print(f"stopping after epoch {self.epoch - 1}: wall-time budget of {limit:.0f} s reached")
                    break
            validation = self._finish()
            status = "FINISHED"
            if self.budget is not None and dist.is_main:
                print(
                    f"trained {self.epoch} epoch(s) in {self._elapsed_s():.0f} s, validation included, "
                    f"of a {self.budget.seconds:.0f} s time budget"
                )
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            for loader in (train_loader, val_loader):
                if loader is not None:
                    loader.close()
            self.tracker.end(status)
            self.close()
        return TrainResult(self.record.fold_paths.root, self.epoch, float(self.ema or 0.0), self.run_id, validation)

    def _epoch(self, train_loader: Prefetcher, val_loader: Prefetcher | None) -> None:
        epoch_start, dist = time.perf_counter(), self.record.dist
        iters = self.record.config.iters_per_epoch
        total = self.planned_epochs * iters
        lr = self.recipe.learning_rate(self.epoch * iters, iters, total)
        self.model.train()
        losses = []
        bar = progress(
            range(iters),
            total=iters,
            desc=f"epoch {self.epoch}/{self.planned_epochs}",
            unit="it",
            enabled=self.record.show_progress,
        )
        for iteration in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = self.recipe.learning_rate(self.epoch * iters + iteration, iters, total)
            losses.append(self.train_step(next(train_loader)))
            if not math.isfinite(losses[-1]):
                self._diverged(f"the training loss is {losses[-1]} at iteration {iteration}")
            if self.record.show_progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        train_loss = float(dist.sum(torch.tensor(np.mean(losses))) / dist.world_size)
        entry: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr}
        entry["train_time_s"] = time.perf_counter() - epoch_start
        if val_loader is not None:
            self.model.eval()
            val_losses = []
            counts = torch.zeros(len(self.parts.trial_offsets), 3, len(self._class_names()), device=self.record.device)
            for _ in range(self.record.config.validation_patches):
                loss, batch_counts = self.val_step(next(val_loader))
                val_losses.append(loss)
                counts += batch_counts
            tp, fp, fn = dist.sum(counts).cpu().unbind(1)
            per_strength = dice_per_class(tp.numpy(), fp.numpy(), fn.numpy())  # (strengths, classes)
            if self.full_adjustment is not None:
                entry["adjustment_pseudo_dice"] = per_strength.mean(1).tolist()
                self.adjustment_strength = choose_adjustment_strength([*self.history, entry])
                entry["adjustment_strength"] = self.adjustment_strength
            dice = per_strength[ADJUSTMENT_STRENGTHS.index(self.adjustment_strength)].tolist()
            mean_dice = float(np.mean(dice))
            self.ema = mean_dice if self.ema is None else EMA_DECAY * self.ema + (1 - EMA_DECAY) * mean_dice
            entry.update(
                val_loss=float(dist.sum(torch.tensor(np.mean(val_losses))) / dist.world_size),
                pseudo_dice=dice,
                mean_pseudo_dice=mean_dice,
                ema_pseudo_dice=self.ema,
            )
        entry["epoch_time_s"] = time.perf_counter() - epoch_start
        entry["val_time_s"] = entry["epoch_time_s"] - entry["train_time_s"]
        self.history.append(entry)
        if dist.is_main:
            self._after_epoch(entry)
        self.epoch += 1

    def _after_epoch(self, entry: dict[str, Any]) -> None:
        # metrics first, checkpoint last: a kill in between redoes this epoch and logs its step again,
        # whereas the other order could leave a checkpointed epoch whose metrics never reach MLflow
        metrics = {key: entry[key] for key in ("train_loss", "lr", "epoch_time_s", "train_time_s", "val_time_s")}
        metrics["planned_epochs"] = float(self.planned_epochs)
        if "val_loss" in entry:
            metrics.update(
                val_loss=entry["val_loss"],
                mean_pseudo_dice=entry["mean_pseudo_dice"],
                ema_pseudo_dice=entry["ema_pseudo_dice"],
            )
            for name, value in zip(self._class_names(), entry["pseudo_dice"]):
                metrics[f"pseudo_dice_{name}"] = value
            if "adjustment_strength" in entry:
                metrics["logit_adjustment_strength"] = entry["adjustment_strength"]
        self.tracker.log_metrics(metrics, step=entry["epoch"])
        self.tracker.log_artifact(plot_curves(self.history, self.record.fold_paths.curves, self._class_names()))
        improved = self.ema is not None and self.ema > self.best_ema
        if self.ema is not None and improved:
            self.best_ema = self.ema
        self._require_finite_weights()
        self._checkpoint(self.epoch, finished=False, with_training=True).save(self.record.fold_paths.latest)
        if improved:
            self._checkpoint(self.epoch, finished=False, with_training=False).save(self.record.fold_paths.best)
        if self.record.show_progress:
            summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"epoch {entry['epoch']}: {summary}")

    def _elapsed_s(self) -> float:
        """Wall time of the whole training, including earlier sessions of a resumed run."""
        return self.elapsed_before_s + time.perf_counter() - self.started

    def _require_finite_weights(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.network.parameters()):
            self._diverged("the network weights are no longer finite")

    def _diverged(self, what: str) -> None:
        kept = (
            f"the last good checkpoint ({self.record.fold_paths.latest}, epoch {self.epoch - 1}) is kept"
            if self.epoch > 0
            else "no checkpoint was written"
        )
        raise NnsegError(
            f"training diverged in epoch {self.epoch}: {what}; {kept}. Lower --lr (now "
            f"{self.recipe.initial_lr}) and rerun with --fresh"
        )

    def _class_names(self) -> list[str]:
        return list(self.record.scheme.foreground)

    def _finish(self) -> dict | None:
        run, validation = self.record, None
        if run.dist.is_main:
            self._checkpoint(self.epoch - 1, finished=True, with_training=False).save(run.fold_paths.final)
            if run.config.final_validation and run.config.fold != "all" and run.val_ids:
                validation = validate_fold(
                    run.plan,
                    run.config.configuration,
                    run.fold_paths.root,
                    run.val_ids,
                    device=str(run.device),
                    show_progress=run.show_progress,
                    previous_stage=run.previous_stage,
                )
            log_finished_fold(run, self.tracker, self.epoch, validation)
        run.dist.barrier()
        return validation


def train(
    work: str | os.PathLike | None, config: TrainConfig, *, resume: bool = True, show_progress: bool = True
) -> TrainResult:
    """Train one fold (see the module docstring). Resumes from ``checkpoint_latest.pt`` when ``resume``."""
    return Trainer(work, config, resume=resume, show_progress=show_progress).run()
