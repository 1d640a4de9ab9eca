"""Ensembles and model selection: ``nnseg ensemble`` and ``nnseg find-best``.

``ensemble_folders`` averages the saved probabilities (``<case>.npz`` written by
``nnseg predict --save-probabilities``) of several prediction folders and writes the
argmax (for region models: each region thresholded and painted in the ``regions_class_order`` the ``.npz``
records) with the geometry of the first folder's label map.

``find_best`` streams the cross-validation predictions of every trained configuration
(``models/<config>/fold_*/validation/``) case by case, scores each configuration and each
pair ensemble by mean foreground Dice against the reference labels (no surface distances),
picks the best, decides
per class whether "keep the largest connected component" helps, and writes
``<work>/inference.json``, which ``nnseg predict`` then applies by default.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnseg.atomic import remove_stale_temporaries
from nnseg.dataset import Dataset, load_dataset
from nnseg.dataset.reading import read_case_labels
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import json_safe
from nnseg.evaluation.summary import MetricAccumulator
from nnseg.io import Volume, read_volume, split_suffix, write_volume
from nnseg.labels import LabelScheme, segment
from nnseg.planning.plan import Plan
from nnseg.postprocessing import PostprocessingRule, decide_postprocessing
from nnseg.progress import progress
from nnseg.schema import read_json, write_json_atomic
from nnseg.workspace import Workspace, fold_folders


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


def chosen_postprocessing(work: str | os.PathLike, configuration: str) -> PostprocessingRule | None:
    """The postprocessing find-best chose for ``configuration`` (``<work>/inference.json``); None when the work
    folder has no such file or the choice is for other configurations. A broken file raises NnsegError."""
    path = Workspace(Path(work)).inference_choice
    if not path.is_file():
        return None
    choice = InferenceChoice.load(path)
    return choice.postprocessing if configuration in choice.configurations else None


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


def _regions_class_order(path: Path) -> tuple[int, ...] | None:
    """The paint order a ``.npz`` of region (sigmoid) probabilities records; None for softmax probabilities."""
    with np.load(path) as data:
        if "regions_class_order" not in data.files or not data["regions_class_order"].size:
            return None
        return tuple(int(v) for v in data["regions_class_order"])


def ensemble_folders(
    folders: list[str | os.PathLike], output: str | os.PathLike, *, overwrite: bool = False, show_progress: bool = True
) -> list[Path]:
    """Average the probabilities of the cases present in every folder; write label maps to ``output``."""
    dirs = [Path(f) for f in folders]
    if len(dirs) < 2:
        raise NnsegError(f"-i: ensemble needs at least two prediction folders (-i A B ...), got {len(dirs)}")
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
            raise NnsegError(
                f"{output}: the output folder is one of the input folders; its label maps and "
                "probabilities would be overwritten by the ensemble. Choose another output folder"
            )
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    written = []
    for case_id in progress(common, total=len(common), desc="ensemble", unit="case", enabled=show_progress):
        reference_label = _label_file(dirs[0], case_id)
        target = output / reference_label.name
        if target.exists() and not overwrite:
            continue
        mean = np.mean([load_probabilities(files[case_id]) for files in found], axis=0)
        geometry = read_volume(reference_label).geometry
        if tuple(mean.shape[1:]) != geometry.shape:
            raise NnsegError(
                f"{found[0][case_id]}: probabilities of shape {mean.shape[1:]} do not match "
                f"{reference_label} {geometry.shape}"
            )
        orders = {_regions_class_order(files[case_id]) for files in found}
        if len(orders) > 1:
            raise NnsegError(
                f"{case_id}: the folders hold probabilities of different label schemes (softmax and regions, or "
                f"regions painted in other orders: {sorted(map(str, orders))}); ensemble models of one plan"
            )
        labels = np.asarray(segment(mean, orders.pop()))
        written.append(write_volume(target, labels, geometry, is_label=True))
    return written


def _validation_probabilities(workspace: Workspace, configuration: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for fold in fold_folders(workspace.models(configuration), cross_validation_only=True):
        files.update(_probability_files(fold.validation))
    return files


def _candidates(names: list[str]) -> list[tuple[str, ...]]:
    """Every configuration alone, then every pair ensemble."""
    return [(n,) for n in names] + list(itertools.combinations(names, 2))


def _ensemble(probabilities: dict[str, np.ndarray], combo: tuple[str, ...], scheme: LabelScheme) -> np.ndarray:
    """Label map of the mean probabilities of the configurations in ``combo``."""
    total = probabilities[combo[0]].copy()
    for name in combo[1:]:
        total += probabilities[name]
    total /= len(combo)
    return np.asarray(scheme.segmentation(total))


def _score_case(
    case_id: str,
    files: dict[str, dict[str, Path]],
    reference: Volume,
    scores: dict[tuple[str, ...], MetricAccumulator],
    scheme: LabelScheme,
) -> None:
    """Load each configuration's probabilities of one case once and score every candidate on them."""
    loaded = {name: load_probabilities(files[name][case_id]) for name in files}
    for combo, accumulator in scores.items():
        accumulator.add(case_id, _ensemble(loaded, combo, scheme), reference.array, reference.geometry.spacing)


def _best_predictions(
    cases: list[str], files: dict[str, dict[str, Path]], best: tuple[str, ...], dataset: Dataset, scheme: LabelScheme
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """(prediction of ``best``, reference, spacing) per case, one case in memory at a time."""
    for case_id in cases:
        reference = read_case_labels(dataset.case(case_id))
        # the probabilities are freed before the yield; only label maps outlive a case
        prediction = _ensemble({name: load_probabilities(files[name][case_id]) for name in best}, best, scheme)
        yield prediction, reference.array, reference.geometry.spacing


def find_best(
    work: str | os.PathLike | None, *, configurations: list[str] | None = None, show_progress: bool = True
) -> dict:
    """Choose the best configuration or pair ensemble by cross-validation Dice; decide postprocessing.

    Streams the cases: each case's probabilities are loaded once per configuration and every
    candidate is scored on them (Dice only, no surface distances); only per case Dice values are
    kept. A second pass over the cases feeds the best candidate's predictions to
    :func:`~nnseg.postprocessing.decide_postprocessing`.
    """
    workspace = Workspace.at(work)
    plan = Plan.load(workspace.plans)
    for name in configurations or []:
        plan.configuration(name)  # an unknown name: the error lists the plan's configurations
        if not _validation_probabilities(workspace, name):
            raise NnsegError(
                f"{name}: no cross-validation predictions under {workspace.models(name)}; train its "
                "folds with final validation first, or leave it out of --configs"
            )
    names = configurations or [c for c in plan.configurations if _validation_probabilities(workspace, c)]
    if not names:
        raise NnsegError(
            f"{workspace.root}: no trained configuration with validation predictions "
            "(train folds with final validation first)"
        )
    files = {name: _validation_probabilities(workspace, name) for name in names}
    cases = sorted(set.intersection(*(set(p) for p in files.values())))
    if not cases:
        raise NnsegError("the configurations share no validated case")
    dataset = load_dataset(plan.dataset_root)
    scheme = plan.scheme
    scores = {
        combo: MetricAccumulator(scheme.foreground, metrics=("dice",), ignore_value=scheme.ignore_value)
        for combo in _candidates(names)
    }
    for case_id in progress(cases, total=len(cases), desc="find-best", unit="case", enabled=show_progress):
        _score_case(case_id, files, read_case_labels(dataset.case(case_id)), scores, scheme)
    candidates = {combo: accumulator.summary().mean_dice for combo, accumulator in scores.items()}
    best = max(candidates, key=lambda combo: candidates[combo])
    rule, report = decide_postprocessing(_best_predictions(cases, files, best, dataset, scheme), scheme)
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
