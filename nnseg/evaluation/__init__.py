"""Evaluation: segmentation metrics (Dice, IoU, HD95, NSD, volumes) and folder evaluation."""

from nnseg.evaluation.evaluate import CaseResult, ClassSummary, EvaluationSummary, evaluate_folders
from nnseg.evaluation.metrics import (
    METRIC_NAMES,
    ClassMetrics,
    class_mask,
    compute_metrics,
    dice_from_counts,
    hausdorff_distance,
    iou_from_counts,
    mask_metrics,
    normalize_labels,
    normalized_surface_dice,
    overlap_counts,
    surface_distances,
)

__all__ = [
    "METRIC_NAMES",
    "CaseResult",
    "ClassMetrics",
    "ClassSummary",
    "EvaluationSummary",
    "class_mask",
    "compute_metrics",
    "dice_from_counts",
    "evaluate_folders",
    "hausdorff_distance",
    "iou_from_counts",
    "mask_metrics",
    "normalize_labels",
    "normalized_surface_dice",
    "overlap_counts",
    "surface_distances",
]
