"""find-best on 5 folds × 2 configurations: Dice only (no surface distance), one case in memory at a time,
and the same choice as scoring every candidate with the full metrics."""

from __future__ import annotations

import itertools
import weakref
from pathlib import Path

import numpy as np
import pytest

from nnseg import ensembling
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.evaluation import compute_metrics
from nnseg.planning.plan import Plan
from nnseg.postprocessing import decide_postprocessing

CONFIGURATIONS = ("3d_fullres", "2d")
FOLDS = 5


def _fabricate_validation(work: Path) -> list[str]:
    """Noisy softmax probabilities of every training case, spread over 5 folds, for both configurations."""
    plan = Plan.load(work / "plans.json")
    dataset = load_dataset(plan.dataset_root)
    num_classes = max(plan.labels.values()) + 1
    case_ids = sorted(case.case_id for case in dataset.cases)
    for seed, configuration in enumerate(CONFIGURATIONS):
        rng = np.random.default_rng(seed)
        for index, case_id in enumerate(case_ids):
            reference = read_case_labels(dataset.case(case_id)).array
            logits = 4.0 * (
                np.moveaxis(np.eye(num_classes)[reference], -1, 0) + rng.normal(0, 0.3, (num_classes, *reference.shape))
            )
            probabilities = np.exp(logits - logits.max(0))
            probabilities /= probabilities.sum(0)
            folder = work / "models" / configuration / f"fold_{index % FOLDS}" / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(folder / f"{case_id}.npz", probabilities=probabilities.astype(np.float32))
    return case_ids


def _full_metrics_choice(work: Path, case_ids: list[str]) -> tuple[dict[str, float], list]:
    """Every candidate scored on all metrics, predictions kept in memory (the former find-best)."""
    plan = Plan.load(work / "plans.json")
    dataset = load_dataset(plan.dataset_root)
    labels = {name: value for name, value in plan.labels.items() if value != 0}
    names = [c for c in plan.configurations if c in CONFIGURATIONS]  # find-best's order
    by_case = {c: {p.stem: p for p in (work / "models" / c).glob("fold_*/validation/*.npz")} for c in names}
    scores, predictions = {}, {}
    for combo in [(c,) for c in names] + list(itertools.combinations(names, 2)):
        dice, predicted = [], []
        for case_id in case_ids:
            mean = sum(ensembling.load_probabilities(by_case[c][case_id]) for c in combo) / len(combo)
            reference = read_case_labels(dataset.case(case_id))
            predicted.append((mean.argmax(0).astype(np.uint8), reference.array, reference.geometry.spacing))
            metrics = compute_metrics(predicted[-1][0], reference.array, reference.geometry.spacing, labels)
            dice.append(np.mean([m.dice for m in metrics.values()]))
        scores["+".join(combo)] = float(np.mean(dice))
        predictions["+".join(combo)] = predicted
    best = max(scores, key=lambda name: scores[name])
    return scores, list(decide_postprocessing(predictions[best], labels))


class _Alive:
    """Counts how many of the arrays it was shown are still alive, at most, at any time it was shown one."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.peak = 0

    def track(self, array: np.ndarray) -> np.ndarray:
        self.refs.append(weakref.ref(array))
        self.peak = max(self.peak, sum(ref() is not None for ref in self.refs))
        return array


def test_find_best_streams_dice_only(preprocessed_work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case_ids = _fabricate_validation(preprocessed_work)
    expected_scores, (expected_rule, expected_report) = _full_metrics_choice(preprocessed_work, case_ids)

    def refuse(*args, **kwargs):
        raise AssertionError("find-best computed surface distances")

    monkeypatch.setattr("nnseg.evaluation.metrics.surface_distances", refuse)
    loads: list[Path] = []
    probabilities, predictions = _Alive(), _Alive()
    real_load, real_ensemble = ensembling.load_probabilities, ensembling._ensemble
    monkeypatch.setattr(
        ensembling, "_ensemble", lambda loaded, combo, *scheme: predictions.track(real_ensemble(loaded, combo, *scheme))
    )
    monkeypatch.setattr(
        ensembling, "load_probabilities", lambda path: loads.append(path) or probabilities.track(real_load(path))
    )
    result = ensembling.find_best(preprocessed_work, show_progress=False)

    assert result["num_cases"] == len(case_ids) == 6
    assert result["candidates"] == pytest.approx(expected_scores, rel=1e-12)
    assert result["configurations"] == max(expected_scores, key=lambda n: expected_scores[n]).split("+")
    assert result["postprocessing"] == expected_rule.to_dict()
    assert result["postprocessing_report"] == expected_report
    # pass 1 loads each configuration's probabilities of a case once; pass 2 those of the best candidate
    first_pass = len(case_ids) * len(CONFIGURATIONS)
    assert len(set(loads[:first_pass])) == first_pass
    assert len(loads) == first_pass + len(case_ids) * len(result["configurations"])
    assert probabilities.peak <= len(CONFIGURATIONS)  # one case's probabilities at a time
    assert predictions.peak <= 2  # not every candidate's predictions of every case (3 x 6 here)
