"""Final validation of a fold: predict its validation cases from the raw images with the predictor of
``nnseg predict`` and score them in the original geometry (per case, per class)."""

from __future__ import annotations

from pathlib import Path

from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.evaluation.metrics import compute_metrics, json_safe
from nnseg.inference.predictor import Predictor
from nnseg.planning.plan import Plan
from nnseg.progress import progress
from nnseg.schema import write_json_atomic


def validate_fold(plan: Plan, configuration: str, fold_dir: Path, case_ids: list[str], *, device: str,
                  show_progress: bool = True) -> dict:
    """Write ``<fold>/validation/<case>.nii.gz`` (+ ``<case>.npz`` probabilities) and ``summary.json``."""
    predictor = Predictor.from_checkpoints([fold_dir / "checkpoint_final.pt"], device=device)
    dataset = load_dataset(plan.dataset_root)
    out = fold_dir / "validation"
    labels = {name: value for name, value in plan.labels.items() if value != 0}
    cases = {}
    for case_id in progress(case_ids, total=len(case_ids), desc="validation", unit="case", enabled=show_progress):
        case = dataset.case(case_id)
        # probabilities are kept for find-best (ensembles of configurations, postprocessing decisions)
        prediction = predictor.predict(list(case.image_files), out / f"{case_id}{dataset.file_ending}",
                                       save_probabilities=True)
        reference = read_case_labels(case)
        metrics = compute_metrics(prediction, reference.array, reference.geometry.spacing, labels)
        cases[case_id] = {name: m.to_dict() for name, m in metrics.items()}
    per_class = {name: _mean([cases[c][name]["dice"] for c in cases]) for name in labels}
    summary = {"configuration": configuration, "cases": cases, "mean_dice_per_class": per_class,
               "mean_dice": _mean(list(per_class.values())), "stage_seconds": predictor.times.seconds}
    write_json_atomic(out / "summary.json", json_safe(summary))
    return summary


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(sum(finite) / len(finite)) if finite else float("nan")
