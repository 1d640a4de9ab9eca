"""Dataset fingerprint: what the data is, in four facts per case plus intensity statistics.

Per case: voxel spacing, original shape, shape after cropping to the nonzero box, and
the relative size after cropping. Per channel: foreground (label > 0) intensity
statistics over the whole dataset. Cases are streamed through worker processes, one
case per worker at a time; intensity samples are capped at a fixed total, so memory
does not grow with the number of cases.

Statistics: mean, std, min and max are exact (streamed over every foreground voxel);
median and the 0.5 / 99.5 percentiles come from a seeded sample of
``FOREGROUND_SAMPLES_TOTAL`` voxels per channel, split evenly over cases (nnU-Net
samples 10^8 voxels with replacement for all of them).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnseg.cropping import crop_to_nonzero
from nnseg.dataset import Dataset
from nnseg.dataset.reading import largest_case_bytes, read_case_images, read_case_labels
from nnseg.errors import NnsegError
from nnseg.parallel import default_workers, parallel_map
from nnseg.progress import progress
from nnseg.schema import load_dataclass, read_json, write_json_atomic

FOREGROUND_SAMPLES_TOTAL = 2_000_000
SAMPLING_SEED = 1234
FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class CaseFingerprint:
    """Geometry facts of one case (array order ``(k, j, i)``).

    Attributes:
        case_id: the case.
        spacing: voxel size in mm.
        shape: original shape.
        shape_after_crop: shape of the nonzero bounding box.
        relative_size_after_crop: voxels after cropping / voxels before.
        foreground_voxels: voxels with label > 0 inside the box.
    """

    case_id: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    relative_size_after_crop: float
    foreground_voxels: int


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel over the dataset."""

    mean: float
    std: float
    min: float
    max: float
    median: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Fingerprint:
    """What the dataset is: written to ``fingerprint.json`` by ``nnseg plan``.

    Attributes:
        version: fingerprint schema version.
        dataset_name: from dataset.json.
        channel_names: channel order.
        cases: per-case geometry facts, in case order.
        intensity: per-channel foreground statistics, in channel order.
        median_relative_size_after_crop: median over cases (drives the nonzero-mask normalization rule).
    """

    version: int
    dataset_name: str
    channel_names: tuple[str, ...]
    cases: tuple[CaseFingerprint, ...]
    intensity: tuple[IntensityStats, ...]
    median_relative_size_after_crop: float

    @property
    def spacings(self) -> np.ndarray:
        """``(n_cases, 3)`` voxel sizes in mm."""
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """``(n_cases, 3)`` shapes after cropping."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=np.int64)

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Fingerprint:
        return load_dataclass(cls, read_json(path, "fingerprint"), "")


@dataclass(frozen=True)
class _CaseResult:
    fingerprint: CaseFingerprint
    samples: list[np.ndarray]  # per channel, float32
    sums: list[tuple[int, float, float, float, float]]  # per channel: count, sum, sum of squares, min, max


def _analyze_case(task: tuple[Dataset, int, int]) -> _CaseResult:
    dataset, index, samples_per_case = task
    case = dataset.cases[index]
    images = read_case_images(case, dataset.num_channels)
    labels = read_case_labels(case)
    cropped, cropped_labels, _, _ = crop_to_nonzero(images.array, labels.array)
    if cropped_labels is None:
        raise NnsegError(f"{case.case_id}: no label map to fingerprint")
    foreground = np.asarray(cropped_labels > 0)
    rng = np.random.default_rng([SAMPLING_SEED, index])
    samples, sums = [], []
    for channel in cropped:
        values = channel[foreground].astype(np.float64)
        if values.size:
            samples.append(rng.choice(values, samples_per_case, replace=True).astype(np.float32))
            sums.append(
                (
                    values.size,
                    float(values.sum()),
                    float(np.square(values).sum()),
                    float(values.min()),
                    float(values.max()),
                )
            )
        else:
            samples.append(np.empty(0, np.float32))
            sums.append((0, 0.0, 0.0, math.inf, -math.inf))
    fingerprint = CaseFingerprint(
        case_id=case.case_id,
        spacing=tuple(float(s) for s in images.geometry.spacing),
        shape=tuple(int(s) for s in images.array.shape[1:]),
        shape_after_crop=tuple(int(s) for s in cropped.shape[1:]),
        relative_size_after_crop=float(np.prod(cropped.shape[1:]) / np.prod(images.array.shape[1:])),
        foreground_voxels=int(foreground.sum()),
    )
    return _CaseResult(fingerprint, samples, sums)


def _channel_stats(samples: list[np.ndarray], sums: list[tuple[int, float, float, float, float]]) -> IntensityStats:
    count = sum(s[0] for s in sums)
    if count == 0:
        nan = float("nan")
        return IntensityStats(nan, nan, nan, nan, nan, nan, nan)
    total = sum(s[1] for s in sums)
    total_sq = sum(s[2] for s in sums)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    low, median, high = np.percentile(np.concatenate(samples), (0.5, 50.0, 99.5))
    return IntensityStats(
        mean=mean,
        std=std,
        min=min(s[3] for s in sums),
        max=max(s[4] for s in sums),
        median=float(median),
        percentile_00_5=float(low),
        percentile_99_5=float(high),
    )


def extract_fingerprint(dataset: Dataset, *, workers: int | None = None, show_progress: bool = True) -> Fingerprint:
    """Fingerprint a dataset (cases must be complete; run ``check_dataset`` first).

    Args:
        dataset: the loaded dataset.
        workers: reader processes; default from CPU cores and free memory.
        show_progress: draw a progress bar on stderr.
    """
    n_cases = len(dataset.cases)
    samples_per_case = max(1, FOREGROUND_SAMPLES_TOTAL // max(n_cases, 1))
    if workers is None:
        workers = default_workers(largest_case_bytes(dataset) * 6 + 200 * 2**20)  # float32 copies + crop
    tasks = [(dataset, i, samples_per_case) for i in range(n_cases)]
    cases: list[CaseFingerprint] = []
    samples: list[list[np.ndarray]] = [[] for _ in dataset.channel_names]
    sums: list[list[tuple[int, float, float, float, float]]] = [[] for _ in dataset.channel_names]
    results = parallel_map(_analyze_case, tasks, workers=workers)
    for result in progress(results, total=n_cases, desc="fingerprint", unit="case", enabled=show_progress):
        cases.append(result.fingerprint)
        for channel in range(dataset.num_channels):
            samples[channel].append(result.samples[channel])
            sums[channel].append(result.sums[channel])
    return Fingerprint(
        version=FINGERPRINT_VERSION,
        dataset_name=dataset.name,
        channel_names=dataset.channel_names,
        cases=tuple(cases),
        intensity=tuple(_channel_stats(samples[c], sums[c]) for c in range(dataset.num_channels)),
        median_relative_size_after_crop=float(np.median([c.relative_size_after_crop for c in cases])),
    )
