"""Final validation of a fold: predict its validation cases from the raw images with the predictor of
``nnseg predict`` and score them in the original geometry (per case, per class)."""

from __future__ import annotations

from pathlib import Path

from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.evaluation.summary import MetricAccumulator
from nnseg.inference.predictor import Predictor
from nnseg.planning.plan import Plan
from nnseg.progress import progress
from nnseg.workspace import FoldPaths


def validate_fold(
    plan: Plan, configuration: str, fold_dir: Path, case_ids: list[str], *, device: str, show_progress: bool = True
) -> dict:
    """Write ``<fold>/validation/<case>.nii.gz`` (+ ``<case>.npz`` probabilities) and ``summary.json``.

    ``summary.json`` is an :class:`~nnseg.evaluation.summary.EvaluationSummary`, the schema of
    ``nnseg evaluate``'s ``metrics.json``; ``configuration`` names the run in the progress bar.

    Returns:
        The summary as written (``mean_dice``, ``mean_dice_per_class``, ``per_class``, ``cases``, ...).
    """
    fold = FoldPaths(fold_dir)
    predictor = Predictor.from_checkpoints([fold.final], device=device)
    dataset = load_dataset(plan.dataset_root)
    out = fold.validation
    scores = MetricAccumulator({name: value for name, value in plan.labels.items() if value != 0})
    for case_id in progress(
        case_ids, total=len(case_ids), desc=f"validation {configuration}", unit="case", enabled=show_progress
    ):
        case = dataset.case(case_id)
        target = out / f"{case_id}{dataset.file_ending}"
        # probabilities are kept for find-best (ensembles of configurations, postprocessing decisions)
        prediction = predictor.predict(list(case.image_files), target, save_probabilities=True)
        reference = read_case_labels(case)
        scores.add(
            case_id,
            prediction,
            reference.array,
            reference.geometry.spacing,
            prediction_path=str(target),
            reference_path=str(case.label_file),
        )
    summary = scores.summary(str(out), str(dataset.root / "labelsTr"))
    summary.write_json(fold.validation_summary)
    return summary.to_dict()
