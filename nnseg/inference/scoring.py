"""Predict cases of the plan's own dataset from their raw images and score them against their labels: a fold's final
validation (:mod:`nnseg.training.validation`) and the Dice checks of reduced-precision exports (:mod:`nnseg.deploy`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnseg.atomic import atomic_path
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels, read_channels
from nnseg.evaluation.summary import EvaluationSummary, MetricAccumulator
from nnseg.inference.predictor import Predictor
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.progress import progress
from nnseg.workspace import FoldPaths


def score_cases(
    predictor: Predictor,
    plan: Plan,
    case_ids: list[str],
    *,
    output: Path | None = None,
    desc: str = "final validation",
    show_progress: bool = True,
    next_stage: tuple[ConfigurationPlan, FoldPaths] | None = None,
) -> EvaluationSummary:
    """Predict training cases of the plan's dataset from their raw images and score them against their labels.

    ``output``: where ``<case><ending>`` and ``<case>.npz`` probabilities are written (None: nothing is written).
    ``next_stage``: (configuration, fold): also write the fold's ``predicted_next_stage`` file of each case, its
    segmentation on that configuration's preprocessed grid.
    ``nnseg export --int8`` scores its fp32 and int8 exports through this too.
    """
    dataset = load_dataset(plan.dataset_root)
    scheme = plan.scheme
    scores = MetricAccumulator(scheme.foreground, ignore_value=scheme.ignore_value)
    for case_id in progress(case_ids, total=len(case_ids), desc=desc, unit="case", enabled=show_progress):
        case = dataset.case(case_id)
        reference = read_case_labels(case)
        target = None if output is None else output / f"{case_id}{dataset.file_ending}"
        # probabilities are kept for find-best (ensembles of configurations, postprocessing decisions)
        prediction = predictor.predict_volume(
            read_channels(list(case.image_files)),
            case_id,
            return_probabilities=target is not None,
            next_stage=None if next_stage is None else next_stage[0],
        )
        if target is not None:
            predictor.write(prediction, target)
        if next_stage is not None and prediction.next_stage is not None:
            _save_stage_segmentation(next_stage[1].next_stage_case(next_stage[0].name, case_id), prediction.next_stage)
        scores.add(
            case_id,
            prediction.labels,
            reference.array,
            reference.geometry.spacing,
            prediction_path="" if target is None else str(target),
            reference_path=str(case.label_file),
        )
    where = "" if output is None else str(output)
    return scores.summary(where, str(dataset.root / "labelsTr"))


def _save_stage_segmentation(path: Path, segmentation: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, segmentation, allow_pickle=False)
