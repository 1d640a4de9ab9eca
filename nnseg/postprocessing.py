"""nnU-Net's postprocessing: keep only the largest connected component, where cross-validation says it helps.

Two kinds of step, applied in this order by :class:`PostprocessingRule`:

1. *Foreground*: all nonzero voxels form one mask; voxels outside its largest component become 0.
2. *Per class*: for each listed class (one label value, or a region's values) in turn, voxels of
   that class outside its largest component become 0.

Components are 26-connected (full 3D neighbourhood). :func:`decide_postprocessing` chooses the
steps from cross-validation predictions the way nnU-Net v2 does (see its docstring), and
:func:`postprocess_folder` applies a rule to a folder of label maps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnseg.atomic import remove_stale_temporaries
from nnseg.errors import NnsegError
from nnseg.evaluation.metrics import (
    ClassMetrics,
    class_mask,
    compute_metrics,
)
from nnseg.evaluation.summary import summarize_class
from nnseg.io import IMAGE_SUFFIXES, Geometry, read_label_map, write_volume
from nnseg.labels import evaluated_classes
from nnseg.parallel import parallel_map
from nnseg.schema import SchemaError

#: A class: one label value, or a tuple of values for a region.
LabelSpec = int | tuple[int, ...]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tightest box around the True voxels, or None when there are none (about two passes over ``mask``)."""
    if mask.ndim == 1:
        hits = np.flatnonzero(mask)
        return None if hits.size == 0 else (slice(int(hits[0]), int(hits[-1]) + 1),)
    hits = np.flatnonzero(mask.any(axis=tuple(range(1, mask.ndim))))
    if hits.size == 0:
        return None
    first = slice(int(hits[0]), int(hits[-1]) + 1)
    rest = _bounding_box(np.asarray(mask[first].any(axis=0)))
    return None if rest is None else (first, *rest)


def _largest_of(crop: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask of the largest component, number of components) of a boolean mask, fully connected (26 in 3D).

    With at most one component the mask is ``crop`` itself. 3D masks go through SimpleITK's
    multi-threaded labelling (several times faster than scipy's); both number components in C
    order, so ties go to the component met first.
    """
    if crop.ndim == 3:
        import SimpleITK as sitk  # here only: 0.3 s of start-up for commands that never postprocess

        labeller = sitk.ConnectedComponentImageFilter()
        labeller.SetFullyConnected(True)
        image = labeller.Execute(sitk.GetImageFromArray(crop.view(np.uint8)))
        count = int(labeller.GetObjectCount())
        components = sitk.GetArrayViewFromImage(image)  # no copy; valid while `image` lives
    else:
        components, count = ndimage.label(crop, structure=ndimage.generate_binary_structure(crop.ndim, crop.ndim))
    if count <= 1:
        return crop, count
    sizes = np.bincount(components[crop], minlength=count + 1)  # foreground voxels only: far fewer than the box
    return components == int(sizes.argmax()), count


def largest_component_mask(mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]] | None:
    """The largest connected component (26-neighbourhood in 3D) of a boolean mask, within its bounding box.

    Returns:
        (component mask cropped to ``box``, ``box``), or None when ``mask`` is empty.
    """
    box = _bounding_box(mask)
    return None if box is None else (_largest_of(mask[box])[0], box)


def _removal(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(box, voxels of ``mask[box]`` outside the largest component), or None when there is nothing to remove."""
    box = _bounding_box(mask)
    if box is None:
        return None
    crop = mask[box]
    keep, count = _largest_of(crop)
    return None if count <= 1 else (box, crop & ~keep)


def _keep_largest_in_place(labels: np.ndarray, mask: np.ndarray) -> bool:
    """Zero the voxels of ``mask`` outside its largest component, in ``labels``; True when any changed."""
    removal = _removal(mask)
    if removal is None:
        return False
    box, remove = removal
    labels[box][remove] = 0  # labels[box] is a view (basic slicing)
    return True


def keep_largest_component(labels: np.ndarray, values: LabelSpec) -> np.ndarray:
    """Keep only the largest 26-connected component of the voxels labelled ``values``.

    Args:
        labels: integer label map.
        values: one label value, or a tuple of values treated as one mask (a region).

    Returns:
        A new label map (same dtype) where the voxels of ``values`` outside their largest
        component are 0 (background); ``labels`` is not modified.
    """
    result = labels.copy()
    _keep_largest_in_place(result, class_mask(labels, _normalize_spec(values)))
    return result


def _normalize_spec(values: object) -> LabelSpec:
    """An int, or a sorted tuple of ints for a region (a one-value tuple becomes an int)."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        return int(values)
    if (
        isinstance(values, (tuple, list))
        and values
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    ):
        unique = tuple(sorted({int(v) for v in values}))
        return unique[0] if len(unique) == 1 else unique
    raise ValueError(f"a class must be a label value or a non-empty tuple of label values, got {values!r}")


@dataclass(frozen=True)
class PostprocessingRule:
    """Which largest-component steps to apply (nnU-Net's ``postprocessing.pkl``, as data).

    Attributes:
        foreground_largest_component: first keep only the largest component of all foreground (nonzero) voxels.
        class_largest_component: then, for each entry in order (a label value, or a tuple of values
            for a region), keep only the largest component of that class.
    """

    foreground_largest_component: bool = False
    class_largest_component: tuple[LabelSpec, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.foreground_largest_component, (bool, np.bool_)):
            raise ValueError(
                f"foreground_largest_component must be True or False, got {self.foreground_largest_component!r}"
            )
        object.__setattr__(self, "foreground_largest_component", bool(self.foreground_largest_component))
        specs = tuple(_normalize_spec(v) for v in self.class_largest_component)
        if 0 in specs:
            raise ValueError("class_largest_component must not list the background (0)")
        object.__setattr__(self, "class_largest_component", specs)

    @property
    def is_identity(self) -> bool:
        """True when the rule changes nothing."""
        return not self.foreground_largest_component and not self.class_largest_component

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Postprocess one label map; returns a new array (same dtype), ``labels`` is not modified."""
        result = labels.copy()
        if self.foreground_largest_component:
            _keep_largest_in_place(result, result != 0)
        for values in self.class_largest_component:
            _keep_largest_in_place(result, class_mask(result, values))
        return result

    def describe(self) -> str:
        """One line for logs, e.g. ``largest component of: foreground, then label 2``."""
        steps = ["foreground"] if self.foreground_largest_component else []
        steps += [f"label {v}" if isinstance(v, int) else f"region {list(v)}" for v in self.class_largest_component]
        return "no postprocessing" if not steps else "largest component of: " + ", then ".join(steps)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"foreground_largest_component": bool, "class_largest_component": [2, [1, 2]]}``."""
        return {
            "foreground_largest_component": self.foreground_largest_component,
            "class_largest_component": [v if isinstance(v, int) else list(v) for v in self.class_largest_component],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PostprocessingRule:
        """Inverse of :meth:`to_dict`.

        Raises:
            SchemaError: a key is missing or unknown, or a value has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise SchemaError(f"postprocessing rule: expected an object, got {type(data).__name__}")
        expected = {"foreground_largest_component", "class_largest_component"}
        unknown = sorted(set(data) - expected)
        if unknown:
            raise SchemaError(f"postprocessing rule.{unknown[0]}: unknown key (expected one of {sorted(expected)})")
        missing = sorted(expected - set(data))
        if missing:
            raise SchemaError(f"postprocessing rule.{missing[0]}: missing")
        if not isinstance(data["foreground_largest_component"], bool):
            raise SchemaError(
                "postprocessing rule.foreground_largest_component: expected true or false, "
                f"got {data['foreground_largest_component']!r}"
            )
        classes = data["class_largest_component"]
        if not isinstance(classes, (list, tuple)):
            raise SchemaError(f"postprocessing rule.class_largest_component: expected a list, got {classes!r}")
        try:
            return cls(
                bool(data["foreground_largest_component"]),
                tuple(tuple(v) if isinstance(v, list) else v for v in classes),
            )
        except ValueError as exc:
            raise SchemaError(f"postprocessing rule.class_largest_component: {exc}") from None


# --- deciding the rule ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Case:
    """One cross-validation case cropped to the box of its nonzero prediction and reference voxels.

    Postprocessing only removes prediction voxels, so the box holds every later prediction too.
    """

    prediction: np.ndarray
    reference: np.ndarray
    spacing: tuple[float, ...]
    ignore_value: int | None = None


def _prepare_case(
    index: int, prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], ignore: int | None = None
) -> _Case:
    """Crop a case (copies, so the full arrays can be freed)."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise NnsegError(
            f"case {index}: prediction shape {prediction.shape} differs from reference shape {reference.shape}"
        )
    box = _bounding_box((prediction != 0) | (reference != 0))
    if box is None:
        box = tuple(slice(0, 0) for _ in prediction.shape)
    return _Case(prediction[box].copy(), reference[box].copy(), tuple(float(s) for s in spacing), ignore)


def _case_dice(prediction: np.ndarray, case: _Case, classes: dict[str, tuple[int, ...]]) -> dict[str, ClassMetrics]:
    """Dice per class of one case (1 when the class is absent from both), by the evaluation core."""
    return compute_metrics(
        prediction, case.reference, case.spacing, classes, metrics=("dice",), ignore_value=case.ignore_value
    )


def _class_means(per_case: Sequence[dict[str, ClassMetrics]], classes: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """Class name -> Dice averaged over the cases."""
    return {
        name: summarize_class(values, [dice[name] for dice in per_case], ("dice",)).mean["dice"]
        for name, values in classes.items()
    }


def _candidate(predictions: Sequence[np.ndarray], mask_of: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Apply one largest-component step to every case; unchanged cases keep their array (same object)."""
    result = []
    for prediction in predictions:
        removal = _removal(mask_of(prediction))
        if removal is None:
            result.append(prediction)
            continue
        box, remove = removal
        changed = prediction.copy()
        changed[box][remove] = 0
        result.append(changed)
    return result


def _rescore(
    candidate: Sequence[np.ndarray],
    current: Sequence[np.ndarray],
    current_scores: Sequence[dict],
    cases: Sequence[_Case],
    classes: dict[str, tuple[int, ...]],
) -> list[dict[str, ClassMetrics]]:
    """Per-case Dice of ``candidate``, recomputed only where it differs from ``current``."""
    return [
        scores if new is old else _case_dice(new, case, classes)
        for new, old, scores, case in zip(candidate, current, current_scores, cases)
    ]


def _foreground_classes(labels: Mapping[str, int | Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], int | None]:
    named, ignore = evaluated_classes(labels)
    classes = {name: values for name, values in named.items() if values != (0,)}
    if not classes:
        raise NnsegError("decide_postprocessing: labels has no foreground class (only the background, 0)")
    for name, values in classes.items():
        if 0 in values:
            raise NnsegError(f"decide_postprocessing: class {name!r} includes the background (0) in {list(values)}")
    return classes, ignore


def _spec_of(values: tuple[int, ...]) -> LabelSpec:
    return values[0] if len(values) == 1 else values


def decide_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    labels: Mapping[str, int | Sequence[int]],
    *,
    min_improvement: float = 0.0,
) -> tuple[PostprocessingRule, dict]:
    """Choose the postprocessing from cross-validation predictions, as nnU-Net v2 does.

    Dice is computed per case and class by :func:`~nnseg.evaluation.metrics.compute_metrics` (1 when
    the class is absent from both prediction and reference) and averaged over the cases as in
    :class:`~nnseg.evaluation.summary.EvaluationSummary`; "foreground Dice" is the mean of those
    class means (nnU-Net's ``foreground_mean``).

    1. Largest component of all foreground: accepted when the foreground Dice rises above the
       baseline by more than ``min_improvement`` and no class's mean Dice falls.
    2. Only with several classes, then for each class in the order of ``labels``, on top of
       what was accepted so far: largest component of that class, accepted when that class's
       mean Dice rises by more than ``min_improvement``.

    Args:
        cases: (prediction, reference, spacing in mm) per cross-validation case; integer label maps
            of equal shape. May be a generator: each case is cropped to the box of its nonzero
            voxels as it comes, so only the crops are kept.
        labels: class name -> label value, or tuple of values for a region (dataset.json's labels, or the
            plan's :class:`~nnseg.labels.LabelScheme`; the background class 0 is skipped, and voxels of the
            ``ignore`` label are not scored).
        min_improvement: Dice margin a step must beat (0: any strict improvement).

    Returns:
        (the rule, a JSON-ready report: Dice per class before and after each step, the decisions
        and the final rule).

    Raises:
        NnsegError: no cases, no foreground class, or a prediction and reference of different shapes.
        ValueError: a negative ``min_improvement``, or a spacing that is not one positive value per axis.
    """
    if not (math.isfinite(min_improvement) and min_improvement >= 0):
        raise ValueError(f"min_improvement must be a finite number >= 0, got {min_improvement}")
    classes, ignore = _foreground_classes(labels)
    prepared = [_prepare_case(i, pred, ref, spacing, ignore) for i, (pred, ref, spacing) in enumerate(cases)]
    if not prepared:
        raise NnsegError("decide_postprocessing: no cases given")
    current = [c.prediction for c in prepared]
    scores = [_case_dice(p, c, classes) for p, c in zip(current, prepared)]
    current_dice = baseline = _class_means(scores, classes)
    steps: list[dict] = []

    candidate = _candidate(current, lambda a: a != 0)
    candidate_scores = _rescore(candidate, current, scores, prepared, classes)
    after = _class_means(candidate_scores, classes)
    fg_before, fg_after = float(np.mean(list(current_dice.values()))), float(np.mean(list(after.values())))
    worse = [name for name in classes if after[name] < current_dice[name]]
    improved = fg_after > fg_before + min_improvement
    use_foreground = improved and not worse
    if use_foreground:
        reason = "foreground Dice improved and no class got worse"
    elif improved:
        reason = f"foreground Dice improved but these classes got worse: {', '.join(worse)}"
    else:
        reason = "foreground Dice did not improve" + (f" by more than {min_improvement}" if min_improvement else "")
    steps.append(
        {
            "step": "foreground_largest_component",
            "accepted": use_foreground,
            "reason": reason,
            "foreground_dice_before": fg_before,
            "foreground_dice_after": fg_after,
            "dice_before": current_dice,
            "dice_after": after,
        }
    )
    if use_foreground:
        current, scores, current_dice = candidate, candidate_scores, after

    accepted_classes: list[LabelSpec] = []
    if len(classes) > 1:
        for name, values in classes.items():
            candidate = _candidate(current, partial(class_mask, values=values))
            candidate_scores = _rescore(candidate, current, scores, prepared, classes)
            after = _class_means(candidate_scores, classes)
            accept = after[name] > current_dice[name] + min_improvement
            steps.append(
                {
                    "step": "class_largest_component",
                    "class": name,
                    "labels": list(values),
                    "accepted": accept,
                    "dice_before": current_dice[name],
                    "dice_after": after[name],
                }
            )
            if accept:
                accepted_classes.append(_spec_of(values))
                current, scores, current_dice = candidate, candidate_scores, after

    rule = PostprocessingRule(use_foreground, tuple(accepted_classes))
    report = {
        "rule": rule.to_dict(),
        "description": rule.describe(),
        "num_cases": len(prepared),
        "min_improvement": min_improvement,
        "classes": {name: list(values) for name, values in classes.items()},
        "baseline": {"dice": baseline, "foreground_dice": float(np.mean(list(baseline.values())))},
        "postprocessed": {"dice": current_dice, "foreground_dice": float(np.mean(list(current_dice.values())))},
        "steps": steps,
    }
    return rule, report


# --- applying a rule to a folder -----------------------------------------------------------------------------


def _label_files(folder: Path, file_ending: str | None) -> list[Path]:
    files = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name.endswith(file_ending) if file_ending is not None else name.lower().endswith(IMAGE_SUFFIXES):
            files.append(path)
    return files


def _read_label_map(path: Path) -> tuple[np.ndarray, Geometry]:
    volume = read_label_map(path)
    return volume.array, volume.geometry


def _postprocess_file(paths: tuple[Path, Path], rule: PostprocessingRule, overwrite: bool) -> Path:
    source, target = paths
    array, geometry = _read_label_map(source)
    return write_volume(target, rule.apply(array), geometry, is_label=True, overwrite=overwrite)


def postprocess_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    rule: PostprocessingRule,
    *,
    file_ending: str | None = None,
    overwrite: bool = False,
    workers: int = 1,
) -> list[Path]:
    """Apply ``rule`` to every label map of ``in_dir`` and write the results, same names, to ``out_dir``.

    Geometry is kept; labels are stored as the smallest integer type. Files starting with ``.``
    and non-image files are skipped.

    Args:
        in_dir: folder of label maps (never written to).
        out_dir: destination folder; created when missing; must differ from ``in_dir``.
        rule: what to apply.
        file_ending: only files ending so (e.g. ``".nii.gz"``); default every supported image suffix.
        overwrite: replace existing files in ``out_dir``.
        workers: processes (1: in this process).

    Returns:
        The written paths, sorted by name.

    Raises:
        NnsegError: ``in_dir`` is missing or has no label maps, ``out_dir`` is ``in_dir``, an output
            exists (without ``overwrite``), or a file is not a readable 3D label map.
    """
    source, target = Path(in_dir), Path(out_dir)
    if not source.is_dir():
        raise NnsegError(f"{source}: prediction folder not found")
    if target.exists() and target.resolve() == source.resolve():
        raise NnsegError(f"{target}: output folder is the input folder; postprocessing never overwrites its inputs")
    files = _label_files(source, file_ending)
    if not files:
        raise NnsegError(f"{source}: no label maps ({file_ending or ', '.join(IMAGE_SUFFIXES)}) found")
    remove_stale_temporaries(target)
    pairs = [(path, target / path.name) for path in files]
    existing = [out.name for _, out in pairs if out.exists()]
    if existing and not overwrite:
        raise NnsegError(
            f"{target}: {len(existing)} output files exist already (e.g. {existing[0]}); pass overwrite to replace them"
        )
    target.mkdir(parents=True, exist_ok=True)
    return list(
        parallel_map(
            partial(_postprocess_file, rule=rule, overwrite=overwrite), pairs, workers=workers, what="label map"
        )
    )
