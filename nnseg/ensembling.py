"""Ensembles and model selection: ``nnseg ensemble`` and ``nnseg find-best``.

``ensemble_folders`` averages the saved probabilities (``<case>.npz`` written by
``nnseg predict --save-probabilities``) of several prediction folders and writes the
argmax with the geometry of the first folder's label map.

``find_best`` reads the cross-validation predictions of every trained configuration
(``models/<config>/fold_*/validation/``), scores each configuration and each pair
ensemble by mean foreground Dice against the reference labels, picks the best, decides
per class whether "keep the largest connected component" helps, and writes
``<work>/inference.json``, which ``nnseg predict`` then applies by default.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import compute_metrics, json_safe
from nnseg.io import read_volume, split_suffix, write_volume
from nnseg.planning.plan import Plan
from nnseg.postprocessing import decide_postprocessing
from nnseg.progress import progress
from nnseg.schema import write_json_atomic
from nnseg.workspace import Workspace


def _probability_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.npz")) if not p.name.startswith(".")}


def _label_file(folder: Path, case_id: str) -> Path:
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix == ".npz" or path.suffix == ".png":
            continue
        try:
            stem, _ = split_suffix(path)
        except NnsegError:
            continue
        if stem == case_id:
            return path
    raise NnsegError(f"{folder}: no label map for case {case_id} next to its probabilities")


def load_probabilities(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["probabilities"].astype(np.float32)


def ensemble_folders(folders: list[str | os.PathLike], output: str | os.PathLike, *, overwrite: bool = False,
                     show_progress: bool = True) -> list[Path]:
    """Average the probabilities of the cases present in every folder; write label maps to ``output``."""
    dirs = [Path(f) for f in folders]
    if len(dirs) < 2:
        raise NnsegError("ensemble needs at least two prediction folders")
    found = [_probability_files(d) for d in dirs]
    for folder, files in zip(dirs, found):
        if not files:
            raise NnsegError(f"{folder}: no <case>.npz probabilities (predict with --save-probabilities)")
    common = sorted(set.intersection(*(set(f) for f in found)))
    missing = sorted(set.union(*(set(f) for f in found)) - set(common))
    if missing:
        raise NnsegError(f"cases without probabilities in every folder: {', '.join(missing[:10])}")
    output = Path(output)
    written = []
    for case_id in progress(common, total=len(common), desc="ensemble", unit="case", enabled=show_progress):
        reference_label = _label_file(dirs[0], case_id)
        target = output / reference_label.name
        if target.exists() and not overwrite:
            continue
        mean = sum(load_probabilities(files[case_id]) for files in found) / len(found)
        geometry = read_volume(reference_label).geometry
        if tuple(mean.shape[1:]) != geometry.shape:
            raise NnsegError(f"{found[0][case_id]}: probabilities of shape {mean.shape[1:]} do not match "
                             f"{reference_label} {geometry.shape}")
        written.append(write_volume(target, mean.argmax(0).astype(np.uint8), geometry, is_label=True))
    return written


def _validation_probabilities(workspace: Workspace, configuration: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for fold in sorted(workspace.models(configuration).glob("fold_[0-9]*")):
        files.update(_probability_files(fold / "validation"))
    return files


def find_best(work: str | os.PathLike | None, *, configurations: list[str] | None = None,
              show_progress: bool = True) -> dict:
    """Choose the best configuration or pair ensemble by cross-validation Dice; decide postprocessing."""
    workspace = Workspace.at(work)
    plan = Plan.load(workspace.plans)
    names = configurations or [c for c in plan.configurations if _validation_probabilities(workspace, c)]
    if not names:
        raise NnsegError(f"{workspace.root}: no trained configuration with validation predictions "
                         "(train folds with final validation first)")
    probabilities = {name: _validation_probabilities(workspace, name) for name in names}
    cases = sorted(set.intersection(*(set(p) for p in probabilities.values())))
    if not cases:
        raise NnsegError("the configurations share no validated case")
    dataset = load_dataset(plan.dataset_root)
    labels = {name: value for name, value in plan.labels.items() if value != 0}
    references = {c: read_case_labels(dataset.case(c)) for c in cases}
    candidates: dict[tuple[str, ...], float] = {}
    combos = [(n,) for n in names] + list(itertools.combinations(names, 2))
    predictions: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    for combo in progress(combos, total=len(combos), desc="find-best", unit="candidate", enabled=show_progress):
        dice, predicted = [], {}
        for case_id in cases:
            mean = sum(load_probabilities(probabilities[n][case_id]) for n in combo) / len(combo)
            predicted[case_id] = mean.argmax(0).astype(np.uint8)
            reference = references[case_id]
            metrics = compute_metrics(predicted[case_id], reference.array, reference.geometry.spacing, labels)
            dice.append(np.nanmean([m.dice for m in metrics.values()]))
        candidates[combo] = float(np.mean(dice))
        predictions[combo] = predicted
    best = max(candidates, key=lambda combo: candidates[combo])
    rule, report = decide_postprocessing(
        [(predictions[best][c], references[c].array, references[c].geometry.spacing) for c in cases],
        labels)
    result = {
        "configurations": list(best),
        "mean_dice": candidates[best],
        "candidates": {"+".join(combo): value for combo, value in candidates.items()},
        "num_cases": len(cases),
        "postprocessing": rule.to_dict(),
        "postprocessing_report": report,
    }
    write_json_atomic(workspace.root / "inference.json", json_safe(result))
    return result
