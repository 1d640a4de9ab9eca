"""Patches from the preprocessed cache: memory-mapped cases, foreground oversampling, background prefetch.

Each batch picks cases uniformly at random; the last ``round(batch * oversample)``
samples are forced to contain foreground of a random class present in their case
(nnU-Net's rule), centred on one of the case's sampled foreground voxels. The region
cut is the augmentation's sampling size (larger than the patch, so rotated corners hold
data). As nnU-Net's loader does, a region may reach beyond the volume by half of ``border``
(the sampling size minus the patch size) on each side, its start drawn uniformly in that
range: the network sees the volume's edges at every position of the patch, not only a case
centred in it (before, a case about the patch's size was always cut whole and centred).
Regions reaching beyond the volume are padded (image 0, label 0). Only the region is read
from the memory-mapped arrays, never the whole volume.

2D configurations cut one slice (axis 0) per sample from the 3D cache.

A cascade stage also cuts the same region of each case's previous-stage segmentation (the first stage's
cross-validation prediction on this grid, :func:`previous_stage_files`), padded with background.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnseg.errors import NnsegError
from nnseg.labels import LabelScheme
from nnseg.preprocessing.preprocess import CachedCase, open_case
from nnseg.workspace import Workspace, fold_folders


@dataclass(frozen=True)
class Batch:
    """Host arrays: ``image`` float32 ``(B, C, *region)``, ``seg`` int16 ``(B, 1, *region)``, case ids, and for a
    cascade stage ``previous`` int16 ``(B, 1, *region)``, the previous stage's segmentation (label values)."""

    image: np.ndarray
    seg: np.ndarray
    case_ids: tuple[str, ...]
    previous: np.ndarray | None = None


class PatchSampler:
    """Cut training regions from cached cases.

    Args:
        folder: the configuration's preprocessed folder.
        case_ids: cases to sample from.
        region_size: spatial size to cut (the augmentation's sampling size), planning order.
        batch_size: samples per batch.
        oversample_foreground: fraction of each batch forced to contain foreground.
        dimensions: 3, or 2 to cut single slices.
        seed: random seed.
        previous_stage: case id -> ``.npy`` file of the previous stage's segmentation on this grid (a cascade
            stage; every case needs one, of the case's shape), or None.
        border: per spatial axis, how far (in total) a region may reach beyond the volume: the sampling size
            minus the patch size (nnU-Net's ``need_to_pad``); None: 0, regions stay inside where they fit.
    """

    def __init__(
        self,
        folder: Path,
        case_ids: Sequence[str],
        region_size: Sequence[int],
        batch_size: int,
        *,
        oversample_foreground: float = 1 / 3,
        dimensions: int = 3,
        seed: int = 0,
        previous_stage: Mapping[str, Path] | None = None,
        border: Sequence[int] | None = None,
    ) -> None:
        if not case_ids:
            raise ValueError("no cases to sample from")
        self.cases: list[CachedCase] = [open_case(folder, c) for c in case_ids]
        self.previous: list[np.ndarray] | None = None
        if previous_stage is not None:
            self.previous = [_open_previous(previous_stage, case) for case in self.cases]
        self.region_size = tuple(int(s) for s in region_size)
        self.border = tuple(int(b) for b in border) if border is not None else (0,) * len(self.region_size)
        if len(self.border) != len(self.region_size):
            raise ValueError(f"border {self.border} does not match the region {self.region_size}")
        self.batch_size = batch_size
        self.forced = round(batch_size * oversample_foreground)
        self.dimensions = dimensions
        self.rng = np.random.default_rng(seed)
        self.num_channels = int(self.cases[0].data.shape[0])

    def _start(self, case: CachedCase, force_foreground: bool) -> np.ndarray:
        """The region's first voxel (may be negative): nnU-Net's ``get_bbox``. Per axis the start lies in
        [-need // 2, n + need // 2 + need % 2 - size], need = the border, or what a smaller volume lacks; a forced
        region is centred on a foreground voxel, moved only to respect the lower bound."""
        shape = case.seg.shape
        size = (1, *self.region_size) if self.dimensions == 2 else self.region_size
        border = (0, *self.border) if self.dimensions == 2 else self.border
        need = [b if n + b >= s else s - n for s, n, b in zip(size, shape, border)]
        lower = np.array([-(d // 2) for d in need], dtype=np.int64)
        upper = np.array([n + d // 2 + d % 2 - s for s, n, d in zip(size, shape, need)], dtype=np.int64)
        if force_foreground and len(case.locations):
            classes = np.unique(case.locations[:, 0])
            chosen = self.rng.choice(classes)
            rows = case.locations[case.locations[:, 0] == chosen]
            voxel = rows[self.rng.integers(len(rows)), 1:].astype(np.int64)
            return np.maximum(lower, voxel - np.array(size) // 2)
        return np.array([self.rng.integers(a, b + 1) for a, b in zip(lower, upper)], dtype=np.int64)

    def _cut(
        self, case: CachedCase, start: np.ndarray, previous: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        shape = case.seg.shape
        size = (1, *self.region_size) if self.dimensions == 2 else self.region_size
        stop = start + np.array(size)
        src = tuple(slice(int(max(0, a)), int(min(n, b))) for a, b, n in zip(start, stop, shape))
        dst = tuple(
            slice(int(max(0, a) - a), int(max(0, a) - a + (min(n, b) - max(0, a))))
            for a, b, n in zip(start, stop, shape)
        )
        image = np.zeros((self.num_channels, *size), dtype=np.float32)
        seg = np.zeros((1, *size), dtype=np.int16)
        image[(slice(None), *dst)] = case.data[(slice(None), *src)]
        seg[0][dst] = case.seg[src]
        np.maximum(seg, 0, out=seg)  # -1 (outside the nonzero mask) trains as background
        cut_previous = None
        if previous is not None:
            cut_previous = np.zeros((1, *size), dtype=np.int16)
            cut_previous[0][dst] = previous[src]
        if self.dimensions == 2:
            image, seg = image[:, 0], seg[:, 0]
            cut_previous = None if cut_previous is None else cut_previous[:, 0]
        return image, seg, cut_previous

    def spawn(self, seed: int | list[int]) -> PatchSampler:
        """A sampler over the same (already opened) cases with its own random stream, for another thread."""
        clone = PatchSampler.__new__(PatchSampler)
        clone.__dict__.update(self.__dict__)
        clone.rng = np.random.default_rng(seed)
        return clone

    def next_batch(self) -> Batch:
        images, segs, ids, previous = [], [], [], []
        for index in range(self.batch_size):
            chosen = int(self.rng.integers(len(self.cases)))
            case = self.cases[chosen]
            force = index >= self.batch_size - self.forced
            image, seg, cut = self._cut(
                case, self._start(case, force), None if self.previous is None else self.previous[chosen]
            )
            images.append(image)
            segs.append(seg)
            ids.append(case.properties.case_id)
            if cut is not None:
                previous.append(cut)
        return Batch(np.stack(images), np.stack(segs), tuple(ids), np.stack(previous) if previous else None)


def _open_previous(files: Mapping[str, Path], case: CachedCase) -> np.ndarray:
    """The previous stage's segmentation of ``case``, memory-mapped; NnsegError when missing or of another grid."""
    case_id = case.properties.case_id
    if case_id not in files:
        raise NnsegError(f"case {case_id}: no previous-stage segmentation (the cascade's first stage predicts it)")
    path = files[case_id]
    try:
        previous = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise NnsegError(
            f"{path}: unreadable previous-stage segmentation ({exc}); retrain that first-stage fold"
        ) from None
    if previous.shape != case.seg.shape:
        raise NnsegError(
            f"{path}: previous-stage segmentation of shape {previous.shape}, but case {case_id} is preprocessed to "
            f"{case.seg.shape}: it was predicted for another plan; retrain that first-stage fold (--fresh)"
        )
    return previous


class Prefetcher:
    """Run a sampler in background threads, keeping ``depth`` batches ready (the GPU/CPU never waits on I/O)."""

    def __init__(self, sampler: PatchSampler, *, threads: int = 2, depth: int = 4) -> None:
        self.queue: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.samplers = [sampler] + [
            sampler.spawn([int(sampler.rng.integers(2**31)), index]) for index in range(1, max(1, threads))
        ]
        self.threads = [threading.Thread(target=self._work, args=(s,), daemon=True) for s in self.samplers]
        for thread in self.threads:
            thread.start()

    def _work(self, sampler: PatchSampler) -> None:
        while not self.stop.is_set():
            try:
                item: Batch | BaseException = sampler.next_batch()
            except BaseException as exc:  # surfaced in the consumer with its traceback
                item = exc
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2)


def class_frequencies(folder: Path, case_ids: Sequence[str], scheme: LabelScheme, *, max_cases: int = 20) -> np.ndarray:
    """Voxel frequency of each network output over (up to ``max_cases`` of) the cached cases: of each label
    value (softmax; -1 counts as background), or the fraction of voxels inside each region (sigmoid).
    Voxels of the ignore label are not counted."""
    regions = list(scheme.regions.values())
    counts = np.zeros(len(regions) if regions else scheme.num_outputs)
    total = 0
    for case_id in case_ids[:max_cases]:
        seg = np.maximum(np.asarray(open_case(folder, case_id).seg), 0).ravel()
        if scheme.ignore_value is not None:
            seg = seg[seg != scheme.ignore_value]
        if regions:
            counts += [np.count_nonzero(np.isin(seg, values)) for values in regions]
            total += seg.size
        else:
            counts += np.bincount(seg, minlength=len(counts))[: len(counts)]
    if regions:
        return counts / max(total, 1.0)
    return counts / max(counts.sum(), 1.0)


def previous_stage_files(
    workspace: Workspace, previous: str, configuration: str, case_ids: Sequence[str], splits: Sequence[Mapping]
) -> dict[str, Path]:
    """Case id -> the ``previous`` stage's cross-validation segmentation for ``configuration`` (from the fold that
    validated the case), for every case of ``case_ids``; NnsegError naming the missing cases and the
    ``nnseg train`` commands of the ``previous`` folds (``splits``) that make them. Never trains on nothing."""
    found: dict[str, Path] = {}
    for fold in fold_folders(workspace.models(previous), cross_validation_only=True):
        for case_id, path in fold.next_stage_cases(configuration).items():
            found.setdefault(case_id, path)
    missing = sorted(set(case_ids) - set(found))
    if missing:
        folds = [k for k, fold in enumerate(splits) if set(fold["val"]) & set(missing)]
        commands = "; ".join(f"nnseg train --work {workspace.root} --config {previous} --fold {k}" for k in folds)
        raise NnsegError(
            f"{configuration} trains on the {previous} stage's cross-validation predictions (its folds' final "
            f"validation writes them), missing for {len(missing)} case(s): {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''}; train the {previous} fold(s) that validate them first: "
            f"{commands or f'nnseg train --work {workspace.root} --config {previous} --fold K'}"
        )
    return {case_id: found[case_id] for case_id in case_ids}
