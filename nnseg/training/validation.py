"""Final validation of a fold: predict its validation cases from the raw images with the predictor of
``nnseg predict`` and score them in the original geometry (per case, per class or region; voxels of the
``ignore`` label are not scored)."""

from __future__ import annotations

from pathlib import Path

from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.evaluation.summary import EvaluationSummary, MetricAccumulator
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
    summary = score_cases(
        predictor,
        plan,
        case_ids,
        output=fold.validation,
        desc=f"validation {configuration}",
        show_progress=show_progress,
    )
    summary.write_json(fold.validation_summary)
    return summary.to_dict()


def score_cases(
    predictor: Predictor,
    plan: Plan,
    case_ids: list[str],
    *,
    output: Path | None = None,
    desc: str = "final validation",
    show_progress: bool = True,
) -> EvaluationSummary:
    """Predict training cases of the plan's dataset from their raw images and score them against their labels.

    ``output``: where ``<case><ending>`` and ``<case>.npz`` probabilities are written (None: nothing is written).
    ``nnseg export --int8`` scores its fp32 and int8 exports through this too.
    """
    dataset = load_dataset(plan.dataset_root)
    scheme = plan.scheme
    scores = MetricAccumulator(scheme.foreground, ignore_value=scheme.ignore_value)
    for case_id in progress(case_ids, total=len(case_ids), desc=desc, unit="case", enabled=show_progress):
        case = dataset.case(case_id)
        reference = read_case_labels(case)
        target = None if output is None else output / f"{case_id}{dataset.file_ending}"
        if target is None:
            prediction = predictor.predict_files(list(case.image_files)).labels
        else:
            # probabilities are kept for find-best (ensembles of configurations, postprocessing decisions)
            prediction = predictor.predict(list(case.image_files), target, save_probabilities=True)
        scores.add(
            case_id,
            prediction,
            reference.array,
            reference.geometry.spacing,
            prediction_path="" if target is None else str(target),
            reference_path=str(case.label_file),
        )
    where = "" if output is None else str(output)
    return scores.summary(where, str(dataset.root / "labelsTr"))
