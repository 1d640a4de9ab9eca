"""Read one case's channels and label map as arrays in array order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnseg.dataset.spec import Case, Dataset
from nnseg.errors import ImageReadError
from nnseg.io import Volume, read_geometry, read_volume
from nnseg.sharding import file_bytes


def largest_case_bytes(dataset: Dataset) -> int:
    """Rough in-memory size of the largest case's images (files decompressed; x4 for .gz), for sizing worker pools."""
    largest = max((file_bytes(c.image_files) for c in dataset.cases), default=0)
    return largest * (4 if dataset.file_ending.endswith(".gz") else 1)


def read_channels(paths: Sequence[str | os.PathLike]) -> Volume:
    """Channel files (one per channel, or one 4D file) as one float32 ``(c, k, j, i)`` array.

    Voxels are converted to float32 while reading. Several files: every header is checked before any
    voxel is read, and each file is copied straight into the stack (memory: the stack plus one file).

    Raises:
        ImageReadError: a file is unreadable, or its grid (shape, spacing, origin, direction) differs
            from the first file's.
    """
    if not paths:
        raise ImageReadError("no image file given")
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        volume = read_volume(paths[0], dtype=np.float32)
        return Volume(volume.array if volume.array.ndim == 4 else volume.array[None], volume.geometry)
    headers = [read_geometry(path) for path in paths]
    first, (geometry, _) = paths[0], headers[0]
    for path, (other, _) in zip(paths[1:], headers[1:]):
        if other.shape != geometry.shape:
            raise ImageReadError(f"{path}: shape {other.shape} differs from {first} {geometry.shape}")
        if not other.matches(geometry):
            raise ImageReadError(f"{path}: geometry differs from {first} ({other.describe()} vs {geometry.describe()})")
    images = np.empty((sum(channels for _, channels in headers), *geometry.shape), dtype=np.float32)
    start = 0
    for path in paths:
        array = read_volume(path, dtype=np.float32).array
        channels = array.reshape((-1, *geometry.shape))
        images[start : start + len(channels)] = channels
        start += len(channels)
        del array, channels
    return Volume(images, geometry)


def read_case_images(case: Case, num_channels: int) -> Volume:
    """All channels of a case as one float32 ``(c, k, j, i)`` array with the first channel's geometry.

    Raises:
        ImageReadError: a file is unreadable, or channels disagree in count or grid.
    """
    volume = read_channels(case.image_files)  # one file per channel, or one 4D file (MSD)
    images, geometry = volume.array, volume.geometry
    if images.shape[0] != num_channels:
        raise ImageReadError(
            f"{case.image_files[0]}: case {case.case_id} has {images.shape[0]} channel(s), expected {num_channels}"
        )
    return Volume(images, geometry)


def read_case_labels(case: Case) -> Volume:
    """The case's label map as an integer ``(k, j, i)`` array."""
    if case.label_file is None:
        raise ImageReadError(f"case {case.case_id} has no label file")
    volume = read_volume(case.label_file)
    if volume.array.ndim != 3:
        raise ImageReadError(f"{case.label_file}: label map must be 3D, got shape {volume.array.shape}")
    array = volume.array if np.issubdtype(volume.array.dtype, np.integer) else np.rint(volume.array)
    return Volume(array.astype(np.int16), volume.geometry)
