"""Validation: the pseudo-Dice counts of each epoch's validation patches, and the final validation of a
fold: predict its validation cases from the raw images with the predictor of
``nnseg predict`` and score them in the original geometry (per case, per class or region; voxels of the
``ignore`` label are not scored). The first stage of a cascade (``3d_lowres``) also writes each validation case's
segmentation on the next stage's preprocessed grid (``fold_<k>/predicted_next_stage/<next>/<case>.npy``): the
folds together give the cascade its training input, as nnU-Net's cross-validation predictions do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from nnseg.inference.predictor import Predictor
from nnseg.inference.scoring import score_cases
from nnseg.planning.plan import Plan
from nnseg.preprocessing.cascade import StoredStage
from nnseg.workspace import FoldPaths


def validate_fold(
    plan: Plan,
    configuration: str,
    fold_dir: Path,
    case_ids: list[str],
    *,
    device: str,
    show_progress: bool = True,
    previous_stage: Mapping[str, Path] | None = None,
) -> dict:
    """Write ``<fold>/validation/<case>.nii.gz`` (+ ``<case>.npz`` probabilities) and ``summary.json``.

    ``summary.json`` is an :class:`~nnseg.evaluation.summary.EvaluationSummary`, the schema of
    ``nnseg evaluate``'s ``metrics.json``; ``configuration`` names the run in the progress bar.
    ``previous_stage``: for a cascade stage, case id -> the first stage's stored cross-validation segmentation.

    Returns:
        The summary as written (``mean_dice``, ``mean_dice_per_class``, ``per_class``, ``cases``, ...).
    """
    fold = FoldPaths(fold_dir)
    config = plan.configuration(configuration)
    previous = None
    if config.previous_stage is not None:
        previous = StoredStage(plan.configuration(config.previous_stage), previous_stage or {})
    predictor = Predictor.from_checkpoints([fold.final], device=device, previous=previous)
    next_name = plan.configuration(configuration).next_stage
    next_stage = plan.configurations.get(next_name) if next_name is not None else None
    summary = score_cases(
        predictor,
        plan,
        case_ids,
        output=fold.validation,
        desc=f"validation {configuration}",
        show_progress=show_progress,
        next_stage=None if next_stage is None else (next_stage, fold),
    )
    summary.write_json(fold.validation_summary)
    return summary.to_dict()


def pseudo_dice_counts(
    predicted: torch.Tensor, target: torch.Tensor, classes: Sequence[Sequence[int]], ignore_value: int | None
) -> torch.Tensor:
    """(3, classes) true positives, false positives, false negatives of each class (its label values) over the
    annotated voxels (not ``ignore_value``) of a batch."""
    annotated = torch.ones_like(target, dtype=torch.bool) if ignore_value is None else target != ignore_value
    counts = torch.zeros(3, len(classes), device=target.device)
    for index, values in enumerate(classes):
        inside = torch.tensor(values, device=target.device)
        p, t = torch.isin(predicted, inside) & annotated, torch.isin(target, inside) & annotated
        counts[0, index] = (p & t).sum()
        counts[1, index] = (p & ~t).sum()
        counts[2, index] = (~p & t).sum()
    return counts
