"""Which checkpoints a model folder holds (one per fold), and where each came from."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnseg.checkpoint import Checkpoint
from nnseg.errors import NnsegError
from nnseg.workspace import FoldPaths, Workspace, fold_folder_name, fold_folders

#: what ``-m`` may name besides a work folder
MODEL_KINDS = (
    "a models/<config> folder, a fold_<k> folder, a checkpoint file, an export folder or a registered model "
    "(models:/NAME/VERSION)"
)


def locate_model(model: Path, configuration: str) -> tuple[Path, Workspace | None]:
    """Where ``-m`` points: a work folder's ``models/<configuration>``, else ``model`` itself; and the work folder
    it lies in (None outside one). A missing path or an untrained configuration raises NnsegError."""
    if not model.exists():
        raise NnsegError(f"-m {model}: not found; give a work folder (holding plans.json and models/), {MODEL_KINDS}")
    work = Workspace.containing(model)
    if work is not None and work.root == model:
        location = work.models(configuration)
        if not location.is_dir():
            raise NnsegError(
                f"-m {model}: no trained {configuration} model in it (no {location}); train it "
                f"first (nnseg train --work {model} --config {configuration}) or choose another -c"
            )
        return location, work
    return model, work


def find_checkpoints(model_dir: str | os.PathLike, folds: Sequence[int | str] | None = None) -> list[Path]:
    """One checkpoint per fold of ``model_dir`` (final, else best, else latest), for ``folds`` or every fold found.

    ``model_dir`` may be a ``models/<config>`` folder, one ``fold_*`` folder or a checkpoint file. Without
    ``folds``, ``fold_all`` (trained on every case) is used only when no cross-validation fold exists: averaging
    it with the folds would weigh the same cases twice.
    """
    model_dir = Path(model_dir)
    if model_dir.is_file():
        return [model_dir]
    if not model_dir.is_dir():
        raise NnsegError(
            f"{model_dir}: model not found; give a work folder (holding plans.json and models/), a "
            "models/<config> folder, a fold_<k> folder or a checkpoint file"
        )
    if FoldPaths(model_dir).is_fold:
        fold_dirs = [FoldPaths(model_dir)]
    elif folds:
        fold_dirs = [FoldPaths(model_dir / fold_folder_name(f)) for f in folds]
    else:
        fold_dirs = fold_folders(model_dir, cross_validation_only=True) or fold_folders(model_dir)
    if not fold_dirs:
        raise NnsegError(
            f"{model_dir}: no fold_*/ folders; train a fold first (nnseg train) or point -m at a checkpoint file"
        )
    found = []
    for fold in fold_dirs:
        candidates = [path for path in fold.checkpoints_by_preference if path.is_file()]
        if not candidates:
            what = "folder not found" if not fold.root.is_dir() else "no checkpoint in it"
            raise NnsegError(
                f"{fold.root}: {what} (expected one of {', '.join(p.name for p in fold.checkpoints_by_preference)})"
            )
        found.append(candidates[0])
    return found


def load_checkpoints(files: Sequence[Path]) -> list[CheckpointSource]:
    """Load checkpoint files (nnseg's safe loader) that must share one plan and configuration."""
    if not files:
        raise NnsegError("no checkpoint given")
    sources = [CheckpointSource(path, Checkpoint.load(path)) for path in files]
    first = sources[0]
    for source in sources[1:]:
        checkpoint = source.checkpoint
        if checkpoint.configuration != first.checkpoint.configuration or checkpoint.plan != first.checkpoint.plan:
            raise NnsegError(f"{source.path}: checkpoint was trained with another plan/configuration than {first.path}")
    return sources


def first_stage_folder(checkpoint: Path, configuration: str, stage: str) -> Path:
    """``models/<stage>`` of the work folder holding ``checkpoint`` (of a cascade ``configuration``); NnsegError
    naming the command to run when that stage is not trained there."""
    work = Workspace.containing(checkpoint.parent)
    if work is None or not work.models(stage).is_dir():
        where = f"in {work.models(stage)}" if work is not None else "(the checkpoint is not inside a work folder)"
        raise NnsegError(
            f"{checkpoint}: a {configuration} model runs its first stage {stage} before itself, but no trained "
            f"{stage} model was found {where}; train it (nnseg train --config {stage} --fold K, for each fold)"
        )
    return work.models(stage)


@dataclass(frozen=True)
class CheckpointSource:
    """Which checkpoint a predictor network came from, for the user to see."""

    path: Path
    checkpoint: Checkpoint

    def describe(self) -> str:
        c = self.checkpoint
        state = "finished" if c.finished else "UNFINISHED"
        return f"{c.configuration} fold {c.fold}: {self.path} ({state}, {c.epochs_trained} epoch(s))"

    @property
    def warning(self) -> str | None:
        """Why this checkpoint may not be what the user wants, or None."""
        if self.checkpoint.finished and self.path == FoldPaths(self.path.parent).final:
            return None
        return (
            f"{self.path}: not the final checkpoint of a finished training ({self.checkpoint.epochs_trained} "
            "epoch(s) done); predictions may be worse than the finished model's. Finish training with "
            "nnseg train (it resumes) or choose the folds with -f"
        )


def require_single_stage(checkpoint: Checkpoint, what: str) -> None:
    """NnsegError for a cascade stage: ``what`` (an export, a registered model) holds one configuration's folds,
    and a cascade stage also needs its first stage's."""
    previous = checkpoint.plan.configuration(checkpoint.configuration).previous_stage
    if previous is not None:
        raise NnsegError(
            f"{checkpoint.configuration} is a cascade stage: {what} cannot bundle its first stage {previous}; "
            "use another configuration, or predict from the work folder (nnseg predict -m WORK -c "
            f"{checkpoint.configuration})"
        )
