"""``nnseg preprocess``: crop, transpose, normalize and resample every training case; cache it for training.

Per case, in the plan's order (as nnU-Net): transpose to planning axis order -> crop to
the nonzero box (CT: then to the body's box, :func:`~nnseg.cropping.crop_to_body`) -> normalize
-> resample to the configuration's spacing. The cache
under ``<work>/preprocessed/<data_identifier>/`` holds per case:

* ``<case>.npy``            float32 ``(c, *spatial)`` image data, opened memory-mapped by training;
* ``<case>_seg.npy``        int8/int16 ``(*spatial)`` labels, -1 outside the nonzero mask;
* ``<case>_locations.npy``  int32 ``(n, 4)`` rows ``(class, z, y, x)``: sampled voxels of each
  foreground class, for foreground oversampling;
* ``<case>.json``           :class:`CaseProperties`: geometry, crop box, shapes, the plan hash.

Crash safety: every file is written to a temporary name and renamed; the JSON comes
last and is the commit marker. A case is "done" only when its JSON exists and carries
the current plan hash, so a rerun skips finished cases, redoes cases whose plan
changed, and a kill at any moment never leaves a case that training would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnseg.atomic import atomic_path, remove_stale_temporaries
from nnseg.cropping import OUTSIDE_NONZERO_LABEL, crop_to_body, crop_to_nonzero
from nnseg.dataset import Dataset, load_dataset
from nnseg.dataset.reading import largest_case_bytes, read_case_images, read_case_labels
from nnseg.errors import NnsegError
from nnseg.io import Geometry
from nnseg.parallel import default_workers, parallel_map
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.preprocessing.normalize import channel_normalizer
from nnseg.preprocessing.resample import new_shape_for, resample_image, resample_labels, separate_axis
from nnseg.progress import progress
from nnseg.schema import load_dataclass, to_jsonable, write_json_atomic
from nnseg.sharding import Shard, file_bytes
from nnseg.workspace import Workspace

#: Bump when the preprocessing code changes what it writes: every cached case is then redone.
PREPROCESSING_VERSION = 2  # 2: CT is cropped to the body's box
LOCATIONS_PER_CLASS = 10_000
MIN_LOCATION_COVERAGE = 0.01


@dataclass(frozen=True)
class CaseProperties:
    """What is needed to map a preprocessed case back to its original image.

    Attributes:
        case_id: the case.
        plan_hash: hash of the plan fields the case was made with (see :func:`preprocessing_hash`).
        geometry: the original image geometry (``Geometry.to_dict()``).
        original_spacing: voxel size of the original image, array order.
        crop_box: nonzero box (CT: the body's box within it), planning order, half-open ``[start, stop)``.
        shape_after_crop: planning order.
        spacing: voxel size after resampling, planning order.
        shape: shape after resampling, planning order (the stored arrays' spatial shape).
        classes: foreground label values present in the case (empty for unlabeled cases).
    """

    case_id: str
    plan_hash: str
    geometry: dict[str, Any]
    original_spacing: tuple[float, ...]
    crop_box: tuple[tuple[int, int], ...]
    shape_after_crop: tuple[int, ...]
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    classes: tuple[int, ...]

    @property
    def original_geometry(self) -> Geometry:
        return Geometry.from_dict(self.geometry)


@dataclass(frozen=True)
class PreprocessedCase:
    """One case after preprocessing (in memory).

    ``body`` is the nonzero mask on the preprocessed grid, computed for unlabeled (inference) cases so that
    sliding-window prediction can skip windows outside the body.
    """

    data: np.ndarray
    seg: np.ndarray | None
    properties: CaseProperties
    locations: np.ndarray
    body: np.ndarray | None = None


def preprocessing_hash(plan: Plan, config: ConfigurationPlan) -> str:
    """Hash of everything that determines a configuration's preprocessed data."""
    relevant = {
        "version": PREPROCESSING_VERSION,
        "transpose": plan.transpose_forward,
        "channels": plan.channel_names,
        "labels": plan.labels,
        "dimensions": config.dimensions,
        "spacing": config.spacing,
        "normalization": config.normalization,
        "resampling": config.resampling,
    }
    text = json.dumps(to_jsonable(relevant), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def target_spacing_for(config: ConfigurationPlan, spacing_planning_order: tuple[float, ...]) -> tuple[float, ...]:
    """3D: the configuration's spacing. 2D: each case keeps its own spacing along the first (out-of-plane) axis."""
    if config.dimensions == 2:
        return (spacing_planning_order[0], *config.spacing)
    return tuple(config.spacing)


def preprocess_case(
    images: np.ndarray,
    geometry: Geometry,
    labels: np.ndarray | None,
    plan: Plan,
    config: ConfigurationPlan,
    *,
    case_id: str,
) -> PreprocessedCase:
    """Preprocess one case in memory.

    Args:
        images: ``(c, k, j, i)`` float32, array order.
        geometry: the images' geometry.
        labels: ``(k, j, i)`` integer label map, or None (inference).
        plan / config: the plan and the configuration to preprocess for.
        case_id: names the case (and seeds its location sampling).
    """
    forward = list(plan.transpose_forward)
    # views, never copies: the image is copied once, into the resampler's buffer, and normalized there
    images = images.transpose([0, *[a + 1 for a in forward]])
    spacing = tuple(float(geometry.spacing[a]) for a in forward)
    if labels is not None:
        labels = labels.transpose(forward)
    cropped, cropped_labels, inside, box = crop_to_nonzero(images, labels)
    if config.is_ct:
        cropped, cropped_labels, inside, box = crop_to_body(cropped, cropped_labels, inside, box, spacing)
    target = target_spacing_for(config, spacing)
    new_shape = new_shape_for(cropped.shape[1:], spacing, target)
    axis = separate_axis(spacing, target, config.resampling)
    body = (
        None if cropped_labels is not None else resample_labels(inside.view(np.int8), new_shape, axis=axis).astype(bool)
    )
    normalizer = channel_normalizer(config.normalization, inside, cropped.shape[0])
    del inside  # the full-size mask lives on only if the normalizer needs it
    data = resample_image(
        cropped,
        new_shape,
        order=config.resampling.image_order,
        axis=axis,
        axis_order=config.resampling.separate_axis_order,
        prepare=normalizer,
    )
    seg = None
    classes: tuple[int, ...] = ()
    locations = np.zeros((0, 4), dtype=np.int32)
    if cropped_labels is not None:
        seg = resample_labels(cropped_labels, new_shape, axis=axis)
        seg = seg.astype(np.int8 if seg.max(initial=0) < 128 else np.int16)
        locations = sample_class_locations(seg, case_id, ignore=plan.scheme.ignore_value)
        classes = tuple(int(c) for c in np.unique(locations[:, 0]))
    properties = CaseProperties(
        case_id=case_id,
        plan_hash=preprocessing_hash(plan, config),
        geometry=geometry.to_dict(),
        original_spacing=tuple(float(s) for s in geometry.spacing),
        crop_box=box,
        shape_after_crop=tuple(int(s) for s in cropped.shape[1:]),
        spacing=tuple(float(s) for s in target),
        shape=tuple(int(s) for s in new_shape),
        classes=classes,
    )
    return PreprocessedCase(data, seg, properties, locations, body)


def sample_class_locations(seg: np.ndarray, case_id: str, *, ignore: int | None = None) -> np.ndarray:
    """Up to ``LOCATIONS_PER_CLASS`` voxels per foreground class (at least 1 % of its voxels), seeded by case id;
    the ``ignore`` label (unannotated voxels) is no class to oversample."""
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    rows = []
    for value in np.unique(seg):
        if value <= 0 or value == ignore:
            continue
        coords = np.argwhere(seg == value)
        count = min(len(coords), max(LOCATIONS_PER_CLASS, int(np.ceil(len(coords) * MIN_LOCATION_COVERAGE))))
        chosen = coords[np.sort(rng.choice(len(coords), count, replace=False))]
        rows.append(np.column_stack([np.full(len(chosen), value), chosen]))
    if not rows:
        return np.zeros((0, 1 + seg.ndim), dtype=np.int32)
    return np.concatenate(rows).astype(np.int32)


# ---------------------------------------------------------------------------------------------- cache on disk


def _paths(folder: Path, case_id: str) -> dict[str, Path]:
    return {
        "data": folder / f"{case_id}.npy",
        "seg": folder / f"{case_id}_seg.npy",
        "locations": folder / f"{case_id}_locations.npy",
        "properties": folder / f"{case_id}.json",
    }


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_case(folder: Path, case: PreprocessedCase) -> None:
    """Write a case atomically: arrays first, the properties JSON (the commit marker) last."""
    paths = _paths(folder, case.properties.case_id)
    paths["properties"].unlink(missing_ok=True)  # the case is not "done" while we rewrite it
    _save_npy_atomic(paths["data"], case.data)
    if case.seg is not None:
        _save_npy_atomic(paths["seg"], case.seg)
    _save_npy_atomic(paths["locations"], case.locations)
    write_json_atomic(paths["properties"], case.properties)


def read_properties(folder: Path, case_id: str) -> CaseProperties | None:
    """The case's properties, or None when the case is missing or incomplete."""
    path = _paths(folder, case_id)["properties"]
    if not path.is_file():
        return None
    try:
        return load_dataclass(CaseProperties, json.loads(path.read_text()))
    except (ValueError, NnsegError):
        return None


def is_done(folder: Path, case_id: str, plan_hash: str) -> bool:
    """True when the case was made with ``plan_hash`` and every file of it is intact.

    Cheap checks only (no data is read): each ``.npy`` header parses, its shape fits the case, and the
    file is exactly as long as the header says, so a truncated, deleted or swapped file is redone.
    """
    properties = read_properties(folder, case_id)
    if properties is None or properties.plan_hash != plan_hash:
        return False
    paths = _paths(folder, case_id)
    spatial = tuple(properties.shape)
    data_shape = _npy_shape(paths["data"])
    return (
        data_shape is not None
        and data_shape[1:] == spatial
        and _npy_shape(paths["seg"]) == spatial
        and (_npy_shape(paths["locations"]) or (0, 0))[1:] == (1 + len(spatial),)
    )


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape of an intact ``.npy`` file (header parses, length matches), else None."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
        return tuple(shape) if path.stat().st_size == expected else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed case opened for training: arrays memory-mapped (nothing read until sliced)."""

    data: np.ndarray
    seg: np.ndarray
    locations: np.ndarray
    properties: CaseProperties


def open_case(folder: Path, case_id: str) -> CachedCase:
    """Open a cached case memory-mapped; raise NnsegError when it is missing or incomplete."""
    properties = read_properties(folder, case_id)
    if properties is None:
        raise NnsegError(f"{folder}: case {case_id} is not preprocessed (run nnseg preprocess)")
    paths = _paths(folder, case_id)
    return CachedCase(
        data=np.load(paths["data"], mmap_mode="r"),
        seg=np.load(paths["seg"], mmap_mode="r"),
        locations=np.load(paths["locations"]),
        properties=properties,
    )


# ---------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class PreprocessSummary:
    """What :func:`preprocess_dataset` did for one configuration."""

    configuration: str
    folder: Path
    processed: int
    skipped: int


def _preprocess_task(task: tuple[Dataset, int, Plan, str, Path]) -> str:
    dataset, index, plan, config_name, folder = task
    case = dataset.cases[index]
    config = plan.configuration(config_name)
    images = read_case_images(case, dataset.num_channels)
    labels = read_case_labels(case)
    result = preprocess_case(images.array, images.geometry, labels.array, plan, config, case_id=case.case_id)
    write_case(folder, result)
    return case.case_id


def preprocess_dataset(
    work: str | os.PathLike | None = None,
    *,
    configurations: list[str] | None = None,
    dataset_root: str | os.PathLike | None = None,
    workers: int | None = None,
    show_progress: bool = True,
    shard: Shard | None = None,
) -> list[PreprocessSummary]:
    """Preprocess every training case for the planned configurations (resumable).

    Args:
        work: the work folder holding plans.json.
        configurations: which configurations (default: every planned one).
        dataset_root: the raw dataset (default: the one recorded in plans.json).
        workers: processes; memory grows by about one case per worker.
        show_progress: progress bar per configuration.
        shard: preprocess only this part of the cases (``--num-parts/--part-id``, torchrun ranks).
    """
    workspace = Workspace.at(work)
    plan = Plan.load(workspace.plans)
    root = Path(dataset_root) if dataset_root is not None else Path(plan.dataset_root)
    dataset = load_dataset(root)
    if plan.channel_names != dataset.channel_names:
        raise NnsegError(
            f"{root}: channels {list(dataset.channel_names)} differ from the plan's "
            f"{list(plan.channel_names)}; re-run nnseg plan"
        )
    names = configurations or list(plan.configurations)
    shard = shard or Shard()
    mine = shard.select(list(range(len(dataset.cases))), size=lambda i: file_bytes(dataset.cases[i].image_files))
    summaries = []
    for name in names:
        config = plan.configuration(name)
        folder = workspace.preprocessed(config.data_identifier)
        folder.mkdir(parents=True, exist_ok=True)
        owned = None
        if not shard.is_whole:
            owned = {p.name for i in mine for p in _paths(folder, dataset.cases[i].case_id).values()}
        remove_stale_temporaries(folder, targets=owned)
        plan_hash = preprocessing_hash(plan, config)
        todo = [i for i in mine if not is_done(folder, dataset.cases[i].case_id, plan_hash)]
        tasks = [(dataset, i, plan, name, folder) for i in todo]
        n_workers = workers or default_workers(largest_case_bytes(dataset) * 12 + 300 * 2**20)  # + resampling
        for _ in progress(
            parallel_map(_preprocess_task, tasks, workers=n_workers),
            total=len(tasks),
            desc=f"preprocess {name}",
            unit="case",
            enabled=show_progress,
        ):
            pass
        summaries.append(PreprocessSummary(name, folder, len(todo), len(mine) - len(todo)))
    return summaries


__all__ = [
    "OUTSIDE_NONZERO_LABEL",
    "CachedCase",
    "CaseProperties",
    "PreprocessSummary",
    "PreprocessedCase",
    "is_done",
    "open_case",
    "preprocess_case",
    "preprocess_dataset",
    "preprocessing_hash",
    "write_case",
]
