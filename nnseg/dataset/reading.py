"""Read one case's channels and label map as arrays in array order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnseg.dataset.spec import Case, Dataset
from nnseg.errors import ImageReadError
from nnseg.io import Geometry, Volume, read_volume


def largest_case_bytes(dataset: Dataset) -> int:
    """Rough in-memory size of the largest case's images (files decompressed; x4 for .gz), for sizing worker pools."""
    largest = max((sum(p.stat().st_size for p in c.image_files if p.is_file()) for c in dataset.cases), default=0)
    return largest * (4 if dataset.file_ending.endswith(".gz") else 1)


def read_channels(paths: Sequence[str | os.PathLike]) -> Volume:
    """Channel files (one per channel, or one 4D file) as one float32 ``(c, k, j, i)`` array.

    Raises:
        ImageReadError: a file is unreadable, or its grid (shape, spacing, origin, direction) differs
            from the first file's.
    """
    if not paths:
        raise ImageReadError("no image file given")
    arrays: list[np.ndarray] = []
    first: tuple[Path, Geometry] | None = None
    for path in map(Path, paths):
        volume = read_volume(path)
        if first is None:
            first = (path, volume.geometry)
        elif volume.geometry.shape != first[1].shape:
            raise ImageReadError(f"{path}: shape {volume.geometry.shape} differs from {first[0]} {first[1].shape}")
        elif not volume.geometry.matches(first[1]):
            raise ImageReadError(f"{path}: geometry differs from {first[0]} "
                                 f"({volume.geometry.describe()} vs {first[1].describe()})")
        data = volume.array if volume.array.ndim == 4 else volume.array[None]
        arrays.append(data.astype(np.float32, copy=False))
    images = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return Volume(images, first[1])


def read_case_images(case: Case, num_channels: int) -> Volume:
    """All channels of a case as one float32 ``(c, k, j, i)`` array with the first channel's geometry.

    Raises:
        ImageReadError: a file is unreadable, or channels disagree in count or grid.
    """
    volume = read_channels(case.image_files)  # one file per channel, or one 4D file (MSD)
    images, geometry = volume.array, volume.geometry
    if images.shape[0] != num_channels:
        raise ImageReadError(f"{case.image_files[0]}: case {case.case_id} has {images.shape[0]} channel(s), "
                             f"expected {num_channels}")
    return Volume(images, geometry)


def read_case_labels(case: Case) -> Volume:
    """The case's label map as an integer ``(k, j, i)`` array."""
    if case.label_file is None:
        raise ImageReadError(f"case {case.case_id} has no label file")
    volume = read_volume(case.label_file)
    if volume.array.ndim != 3:
        raise ImageReadError(f"{case.label_file}: label map must be 3D, got shape {volume.array.shape}")
    return Volume(np.rint(volume.array).astype(np.int16), volume.geometry)
