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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnseg.atomic import remove_stale_temporaries
from nnseg.dataset import load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import compute_metrics, json_safe
from nnseg.io import read_volume, split_suffix, write_volume
from nnseg.planning.plan import Plan
from nnseg.postprocessing import PostprocessingRule, decide_postprocessing
from nnseg.progress import progress
from nnseg.schema import read_json, write_json_atomic
from nnseg.workspace import Workspace


@dataclass(frozen=True)
class InferenceChoice:
    """``<work>/inference.json``, written by find-best: the configurations to use and their postprocessing."""

    configurations: tuple[str, ...]
    postprocessing: PostprocessingRule

    @classmethod
    def load(cls, path: str | os.PathLike) -> InferenceChoice:
        """Read and check inference.json; errors name the file, the field and the fix."""
        path = Path(path)
        data = read_json(path, "inference.json (written by nnseg find-best)")
        fix = "rerun nnseg find-best to rewrite it, or delete it to predict without postprocessing"
        if not isinstance(data, dict):
            raise NnsegError(f"{path}: must hold a JSON object, got {type(data).__name__}; {fix}")
        for key in ("configurations", "postprocessing"):
            if key not in data:
                raise NnsegError(f"{path}: missing {key!r}; {fix}")
        names = data["configurations"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise NnsegError(f"{path}: 'configurations' must be a list of configuration names; {fix}")
        try:
            rule = PostprocessingRule.from_dict(data["postprocessing"])
        except NnsegError as exc:
            raise NnsegError(f"{path}: {exc}; {fix}") from None
        return cls(tuple(names), rule)


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
    for folder in dirs:
        if output.resolve() == folder.resolve():
            raise NnsegError(f"{output}: the output folder is one of the input folders; its label maps and "
                             "probabilities would be overwritten by the ensemble. Choose another output folder")
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
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
    write_json_atomic(workspace.inference_choice, json_safe(result))
    return result
