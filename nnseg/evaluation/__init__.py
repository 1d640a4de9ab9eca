"""Evaluation: segmentation metrics (Dice, IoU, HD95, NSD, volumes), one summary type, folder evaluation."""

from nnseg.evaluation.evaluate import evaluate_folders
from nnseg.evaluation.metrics import (
    METRIC_NAMES,
    SURFACE_METRICS,
    ClassMetrics,
    check_metrics,
    class_mask,
    compute_metrics,
    dice_from_counts,
    hausdorff_distance,
    iou_from_counts,
    mask_metrics,
    normalized_surface_dice,
    overlap_counts,
    surface_distances,
)
from nnseg.evaluation.summary import (
    CaseResult,
    ClassSummary,
    EvaluationSummary,
    MetricAccumulator,
    summarize_class,
)
from nnseg.labels import normalize_labels

__all__ = [
    "METRIC_NAMES",
    "SURFACE_METRICS",
    "CaseResult",
    "ClassMetrics",
    "ClassSummary",
    "EvaluationSummary",
    "MetricAccumulator",
    "check_metrics",
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
    "summarize_class",
    "surface_distances",
]
