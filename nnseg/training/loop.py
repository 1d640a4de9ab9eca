"""``nnseg train``: one fold of one configuration, from the preprocessed cache to checkpoints and an MLflow run.

The epoch loop: learning rate (poly) -> ``iters_per_epoch`` training steps on augmented
patches -> ``val_iters`` validation patches (loss + pseudo-Dice, EMA) -> checkpoints
(latest every epoch, best on the EMA pseudo-Dice) -> curves.png and metrics to MLflow.
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
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnseg.atomic import remove_stale_temporaries
from nnseg.checkpoint import (
    Checkpoint,
    LogitAdjustment,
    TrainingState,
    capture_rng_state,
    load_weights,
    restore_rng_state,
)
from nnseg.distributed import DistributedContext, resolve_device
from nnseg.errors import NnsegError
from nnseg.networks.plans import UNetPlusPlusPlan
from nnseg.networks.registry import build_network
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.progress import progress
from nnseg.recipes import (
    ADJUSTMENT_STRENGTHS,
    RECIPE_FIELDS,
    Recipe,
    choose_adjustment_strength,
    choose_recipe,
    resumed_recipe,
)
from nnseg.training.augment import TrainingAugmentation, center_crop
from nnseg.training.augment.cascade import CascadeAugmentation, append_previous_stage
from nnseg.training.budget import TimeBudget
from nnseg.training.config import TrainConfig
from nnseg.training.data import Batch, PatchSampler, Prefetcher, class_frequencies, previous_stage_files
from nnseg.training.heads import logit_adjustment, set_head_bias_to_prior
from nnseg.training.losses import SegmentationLoss
from nnseg.training.plots import plot_curves
from nnseg.training.pretrained import start_from_pretrained
from nnseg.training.run_setup import fold_cases, log_finished_fold, resumable_checkpoint, start_tracker
from nnseg.training.validation import pseudo_dice_counts, validate_fold
from nnseg.version import __version__
from nnseg.workspace import Workspace

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
    """Holds the state of one training run; :meth:`run` is the epoch loop."""

    def __init__(
        self, work: str | os.PathLike | None, config: TrainConfig, *, resume: bool = True, show_progress: bool = True
    ) -> None:
        self.started = time.perf_counter()
        self.train_config = config
        self.workspace = Workspace.at(work)
        self.plan = Plan.load(self.workspace.plans)
        self.config_plan: ConfigurationPlan = self.plan.configuration(config.configuration)
        self.device = resolve_device(config.device)
        self.dist = DistributedContext.from_launcher(self.device.type)
        self.device = self.dist.local_device(self.device)
        self.show_progress = show_progress and self.dist.is_main
        self.fold_paths = self.workspace.fold_paths(config.configuration, config.fold)
        self.fold_dir = self.fold_paths.root
        remove_stale_temporaries(self.fold_dir)
        remove_stale_temporaries(self.fold_paths.validation)
        if self.config_plan.next_stage is not None:
            remove_stale_temporaries(self.fold_paths.next_stage(self.config_plan.next_stage))
        self.data_dir = self.workspace.preprocessed(self.config_plan.data_identifier)
        cases = fold_cases(self.workspace, self.plan, self.config_plan, config.configuration, config.fold, self.dist)
        self.splits, self.train_ids, self.val_ids = cases.splits, cases.train_ids, cases.val_ids
        #: cascade stage: case id -> the previous stage's cross-validation segmentation on this grid
        self.previous_stage = self._previous_stage_files()
        torch.manual_seed(config.seed + self.dist.rank)
        np.random.seed(config.seed + self.dist.rank)
        random.seed(config.seed + self.dist.rank)

        self.num_channels = self.plan.input_channels(config.configuration)  # + the previous stage's one-hot
        self.scheme = self.plan.scheme  # labels, objective (softmax / sigmoid per region), ignore label
        # deep supervision where the plan has it, unless the run turns it off (--no-deep-supervision)
        self.deep_supervision = config.deep_supervision and self.config_plan.network.deep_supervision
        network_plan = self.config_plan.network
        if isinstance(network_plan, UNetPlusPlusPlan) and network_plan.is_pruned and not self.deep_supervision:
            raise NnsegError(
                "--no-deep-supervision: the plan prunes its UNet++ (prune_level), whose pruned head only "
                "deep supervision trains; drop the option or set prune_level to null in plans.json"
            )
        network = build_network(
            self.config_plan.network, self.num_channels, self.plan.num_classes, deep_supervision=self.deep_supervision
        )
        resuming = resume and self.fold_paths.latest.is_file()  # --pretrained: only a fresh run starts from it
        self.pretrained = start_from_pretrained(
            network, config.pretrained, self.plan, config.configuration, resuming=resuming, show=self.dist.is_main
        )
        self.network = network.to(self.device)
        self.model: torch.nn.Module = self.network
        if config.compile:
            self.model = torch.compile(self.network)  # type: ignore[assignment]
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.use_amp = config.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.augment = TrainingAugmentation.for_patch_size(self.config_plan.patch_size)
        self.cascade_augment = CascadeAugmentation() if self.previous_stage is not None else None
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed + 7919 * self.dist.rank)

        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.ema: float | None = None
        self.best_ema = -math.inf
        self.run_id: str | None = None
        self.elapsed_before_s = 0.0
        self.epoch_walls: list[float] = []
        checkpoint = None
        if resume and self.fold_paths.latest.is_file():
            checkpoint = resumable_checkpoint(
                self.fold_paths.latest, self.plan, config.configuration, config.fold, self.device, self.workspace.plans
            )
        self.budget = TimeBudget.for_trainer(self) if config.time_budget else None
        self.planned_epochs = config.epochs  # a resumed run may be given more (or fewer) epochs
        epochs_done = 0
        if checkpoint is not None and checkpoint.training is not None:
            self.elapsed_before_s = checkpoint.training.elapsed_s
            epochs_done = checkpoint.training.epoch + 1
        if self.budget is not None:  # rank 0's clock decides for every rank
            self.planned_epochs = self.dist.from_main(self.budget.fit(self.elapsed_before_s, epochs_done))
        self.recipe = self._recipe(checkpoint)
        frequencies = None
        if self.recipe.head_bias_prior or self.recipe.class_weight_power:
            frequencies = class_frequencies(self.data_dir, self.train_ids, self.scheme)
        weights = None if frequencies is None else self.recipe.class_weights(frequencies, self.scheme.objective)
        #: a class-weighted run's logit adjustment at strength 1; the strength is chosen on the validation patches
        self.full_adjustment = logit_adjustment(self.network, weights)
        self.adjustment_strength = 0.0
        #: (strengths, 1, classes, 1, ...) offsets the validation tries; one row of zeros without an adjustment
        strengths = ADJUSTMENT_STRENGTHS if self.full_adjustment is not None else (0.0,)
        offsets = [0.0] * self.plan.num_classes if self.full_adjustment is None else self.full_adjustment.offsets
        spatial = [1] * len(self.config_plan.patch_size)
        self.trial_offsets = (torch.tensor(strengths)[:, None] * torch.tensor(offsets)[None]).to(self.device)
        self.trial_offsets = self.trial_offsets.view(len(strengths), 1, -1, *spatial)
        self.loss = SegmentationLoss(
            batch_dice=self.config_plan.batch_dice,
            topk_percent=self.recipe.topk_percent,
            class_weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
            scheme=self.scheme,
        )
        self.optimizer = self.recipe.make_optimizer(self.network.parameters())
        if checkpoint is not None:
            self._restore(checkpoint)
            self.adjustment_strength = choose_adjustment_strength(self.history)
        elif self.recipe.head_bias_prior and frequencies is not None:
            set_head_bias_to_prior(self.network, torch.from_numpy(frequencies).float(), self.scheme.objective)
        if self.budget is not None and self.dist.is_main:
            print(self.budget.describe(self.planned_epochs, config.iters_per_epoch))
        self.tracker = start_tracker(self)

    # ------------------------------------------------------------------------------------------ setup

    def _previous_stage_files(self) -> dict[str, Path] | None:
        """A cascade stage's input: every case's segmentation by the previous stage's fold that validated it."""
        if self.config_plan.previous_stage is None:
            return None
        return previous_stage_files(
            self.workspace,
            self.config_plan.previous_stage,
            self.train_config.configuration,
            sorted(set(self.train_ids) | set(self.val_ids)),
            self.splits,
        )

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.training
        assert state is not None  # checked by _resumable
        load_weights(self.network, checkpoint.network_state, self.fold_paths.latest)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.epoch = state.epoch + 1
        self.history = list(state.history)
        self.ema = state.ema
        self.best_ema = state.best_ema
        self.run_id = state.run_id
        restore_rng_state(state.rng)
        self.generator.set_state(state.generator)

    def _recipe(self, checkpoint: Checkpoint | None) -> Recipe:
        """The run's recipe: a resumed run keeps its own; options override single fields of a new one."""
        overrides = {
            name: getattr(self.train_config, name) for name in RECIPE_FIELDS if hasattr(self.train_config, name)
        }
        if checkpoint is not None and checkpoint.training is not None:
            return resumed_recipe(checkpoint.training.recipe, overrides, self.fold_paths.latest)
        return choose_recipe(
            self.train_config.recipe,
            preset_recipe=self.plan.preset_values.training_recipe,
            total_iterations=self.planned_epochs * self.train_config.iters_per_epoch,
        ).with_overrides(**overrides)

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
                scaler=self.scaler.state_dict() if self.use_amp else None,
                rng=capture_rng_state(),
                generator=self.generator.get_state(),
                train_config=asdict(self.train_config),
                recipe=asdict(self.recipe),
                planned_epochs=self.planned_epochs,
                elapsed_s=self._elapsed_s(),
            )
        return Checkpoint(
            plan=self.plan,
            configuration=self.train_config.configuration,
            fold=self.train_config.fold,
            network_state=self.network.state_dict(),
            deep_supervision=self.deep_supervision,
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

    # ------------------------------------------------------------------------------------------ steps

    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and seg on the device; a cascade's previous-stage segmentation rides along as seg channel 1."""
        image = torch.from_numpy(batch.image).to(self.device, non_blocking=True)
        seg = torch.from_numpy(batch.seg).to(self.device, non_blocking=True)
        if batch.previous is not None:
            previous = torch.from_numpy(batch.previous).to(self.device, non_blocking=True)
            seg = torch.cat([seg, previous.to(seg.dtype)], 1)
        return image, seg

    def _with_previous_stage(
        self, image: torch.Tensor, seg: torch.Tensor, *, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, labels): a cascade's seg channel 1 moved to the image as (augmented) one-hot channels."""
        if seg.shape[1] == 1:
            return image, seg
        return append_previous_stage(image, seg, self.scheme, self.cascade_augment if augment else None, self.generator)

    def _forward_loss(self, image: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            output = self.model(image)
        return output, self.loss(output, seg)

    def train_step(self, batch: Batch) -> float:
        image, seg = self._to_device(batch)
        image, seg = self.augment(image, seg, self.generator)
        image, seg = self._with_previous_stage(image, seg, augment=True)
        self.optimizer.zero_grad(set_to_none=True)
        _, loss = self._forward_loss(image, seg)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def val_step(self, batch: Batch) -> tuple[float, torch.Tensor]:
        """Loss and (strengths, 3, classes) pseudo-Dice counts: one row per logit adjustment strength tried."""
        image, seg = self._to_device(batch)
        patch = self.config_plan.patch_size
        image, seg = center_crop(image, patch), center_crop(seg, patch)
        image, seg = self._with_previous_stage(image, seg, augment=False)
        output, loss = self._forward_loss(image, seg)
        main = (output[0] if isinstance(output, list) else output).float()
        scheme = self.scheme
        classes, target = list(scheme.foreground.values()), seg[:, 0].long()
        counts = []
        for offsets in self.trial_offsets:
            predicted = scheme.segmentation(scheme.probabilities(main + offsets, dim=1), dim=1)
            assert isinstance(predicted, torch.Tensor)
            counts.append(pseudo_dice_counts(predicted, target, classes, scheme.ignore_value))
        return float(loss), torch.stack(counts)

    # ------------------------------------------------------------------------------------------ loop

    def _samplers(self) -> tuple[Prefetcher, Prefetcher | None]:
        batch = self.train_config.batch_size or self.config_plan.batch_size
        per_rank = max(1, math.ceil(batch / self.dist.world_size))
        region = self.augment.sampling_patch_size
        seed = self.train_config.seed + 1000 * self.dist.rank + self.epoch
        train = PatchSampler(
            self.data_dir,
            self.train_ids,
            region,
            per_rank,
            dimensions=self.config_plan.dimensions,
            oversample_foreground=self.recipe.oversample_foreground,
            seed=seed,
            previous_stage=self.previous_stage,
            border=[r - p for r, p in zip(region, self.config_plan.patch_size)],
        )
        val = None
        if self.train_config.val_iters and self.val_ids:
            val = PatchSampler(
                self.data_dir,
                self.val_ids,
                self.config_plan.patch_size,
                per_rank,
                dimensions=self.config_plan.dimensions,
                oversample_foreground=self.recipe.oversample_foreground,
                seed=seed + 1,
                previous_stage=self.previous_stage,
            )
        threads = max(1, self.train_config.loader_threads)
        return Prefetcher(train, threads=threads), (Prefetcher(val, threads=1) if val else None)

    def run(self) -> TrainResult:
        """Train from the current epoch to the end (or the wall-time budget), then validate."""
        started = time.perf_counter()
        train_loader = val_loader = None
        status = "FAILED"
        try:
            train_loader, val_loader = self._samplers()
            while self.epoch < self.planned_epochs:
                epoch_started = time.perf_counter()
                self._epoch(train_loader, val_loader)
                self.epoch_walls.append(time.perf_counter() - epoch_started)
                if self.budget is not None:
                    fitted = self.dist.from_main(self.budget.fit(self._elapsed_s(), self.epoch, self.epoch_walls))
                    if fitted != self.planned_epochs and self.dist.is_main:  # the epoch logged the fit before it
                        self.tracker.log_metrics({"planned_epochs": float(fitted)}, step=self.epoch - 1)
                    self.planned_epochs = fitted
                if (
                    self.train_config.max_wall_time_s
                    and time.perf_counter() - started > self.train_config.max_wall_time_s
                ):
                    if self.dist.is_main:
                        print(
                            f"stopping after epoch {self.epoch - 1}: wall-time budget of "
                            f"{self.train_config.max_wall_time_s:.0f} s reached"
                        )
                    break
            validation = self._finish()
            status = "FINISHED"
            if self.budget is not None and self.dist.is_main:
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
            self.dist.close()
        return TrainResult(self.fold_dir, self.epoch, float(self.ema or 0.0), self.run_id, validation)

    def _epoch(self, train_loader: Prefetcher, val_loader: Prefetcher | None) -> None:
        epoch_start = time.perf_counter()
        iters = self.train_config.iters_per_epoch
        total = self.planned_epochs * iters
        lr = self.recipe.learning_rate(self.epoch * iters, iters, total)
        self.model.train()
        losses = []
        bar = progress(
            range(self.train_config.iters_per_epoch),
            total=self.train_config.iters_per_epoch,
            desc=f"epoch {self.epoch}/{self.planned_epochs}",
            unit="it",
            enabled=self.show_progress,
        )
        for iteration in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = self.recipe.learning_rate(self.epoch * iters + iteration, iters, total)
            losses.append(self.train_step(next(train_loader)))
            if not math.isfinite(losses[-1]):
                self._diverged(f"the training loss is {losses[-1]} at iteration {iteration}")
            if self.show_progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        train_loss = float(self.dist.sum(torch.tensor(np.mean(losses))) / self.dist.world_size)
        record: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr}
        if val_loader is not None:
            self.model.eval()
            val_losses = []
            counts = torch.zeros(len(self.trial_offsets), 3, len(self.scheme.foreground), device=self.device)
            for _ in range(self.train_config.val_iters):
                loss, batch_counts = self.val_step(next(val_loader))
                val_losses.append(loss)
                counts += batch_counts
            tp, fp, fn = self.dist.sum(counts).cpu().unbind(1)
            per_strength = 2 * tp / torch.clamp(2 * tp + fp + fn, min=1)  # (strengths, classes)
            if self.full_adjustment is not None:
                record["adjustment_pseudo_dice"] = per_strength.mean(1).tolist()
                self.adjustment_strength = choose_adjustment_strength([*self.history, record])
                record["adjustment_strength"] = self.adjustment_strength
            dice = per_strength[ADJUSTMENT_STRENGTHS.index(self.adjustment_strength)].tolist()
            mean_dice = float(np.mean(dice))
            self.ema = mean_dice if self.ema is None else EMA_DECAY * self.ema + (1 - EMA_DECAY) * mean_dice
            record.update(
                val_loss=float(self.dist.sum(torch.tensor(np.mean(val_losses))) / self.dist.world_size),
                pseudo_dice=dice,
                mean_pseudo_dice=mean_dice,
                ema_pseudo_dice=self.ema,
            )
        record["epoch_time_s"] = time.perf_counter() - epoch_start
        self.history.append(record)
        if self.dist.is_main:
            self._after_epoch(record)
        self.epoch += 1

    def _after_epoch(self, record: dict[str, Any]) -> None:
        # metrics first, checkpoint last: a kill in between redoes this epoch and logs its step again,
        # whereas the other order could leave a checkpointed epoch whose metrics never reach MLflow
        metrics = {"train_loss": record["train_loss"], "lr": record["lr"], "epoch_time_s": record["epoch_time_s"]}
        metrics["planned_epochs"] = float(self.planned_epochs)
        if "val_loss" in record:
            metrics.update(
                val_loss=record["val_loss"],
                mean_pseudo_dice=record["mean_pseudo_dice"],
                ema_pseudo_dice=record["ema_pseudo_dice"],
            )
            for name, value in zip(self._class_names(), record["pseudo_dice"]):
                metrics[f"pseudo_dice_{name}"] = value
            if "adjustment_strength" in record:
                metrics["logit_adjustment_strength"] = record["adjustment_strength"]
        self.tracker.log_metrics(metrics, step=record["epoch"])
        self.tracker.log_artifact(plot_curves(self.history, self.fold_paths.curves, self._class_names()))
        improved = self.ema is not None and self.ema > self.best_ema
        if self.ema is not None and improved:
            self.best_ema = self.ema
        self._require_finite_weights()
        self._checkpoint(self.epoch, finished=False, with_training=True).save(self.fold_paths.latest)
        if improved:
            self._checkpoint(self.epoch, finished=False, with_training=False).save(self.fold_paths.best)
        if self.show_progress:
            summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"epoch {record['epoch']}: {summary}")

    def _elapsed_s(self) -> float:
        """Wall time of the whole training, including earlier sessions of a resumed run."""
        return self.elapsed_before_s + time.perf_counter() - self.started

    def _require_finite_weights(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.network.parameters()):
            self._diverged("the network weights are no longer finite")

    def _diverged(self, what: str) -> None:
        kept = (
            f"the last good checkpoint ({self.fold_paths.latest}, epoch {self.epoch - 1}) is kept"
            if self.epoch > 0
            else "no checkpoint was written"
        )
        raise NnsegError(
            f"training diverged in epoch {self.epoch}: {what}; {kept}. Lower --lr (now "
            f"{self.recipe.initial_lr}) and rerun with --fresh"
        )

    def _class_names(self) -> list[str]:
        return list(self.scheme.foreground)

    def _finish(self) -> dict | None:
        validation = None
        if self.dist.is_main:
            self._checkpoint(self.epoch - 1, finished=True, with_training=False).save(self.fold_paths.final)
            if self.train_config.final_validation and self.train_config.fold != "all" and self.val_ids:
                validation = validate_fold(
                    self.plan,
                    self.train_config.configuration,
                    self.fold_dir,
                    self.val_ids,
                    device=str(self.device),
                    show_progress=self.show_progress,
                    previous_stage=self.previous_stage,
                )
            log_finished_fold(self, validation)
        self.dist.barrier()
        return validation


def train(
    work: str | os.PathLike | None, config: TrainConfig, *, resume: bool = True, show_progress: bool = True
) -> TrainResult:
    """Train one fold (see the module docstring). Resumes from ``checkpoint_latest.pt`` when ``resume``."""
    return Trainer(work, config, resume=resume, show_progress=show_progress).run()
