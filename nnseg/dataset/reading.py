"""Read one case's channels and label map as arrays in array order."""

from __future__ import annotations

import numpy as np

from nnseg.dataset.spec import Case, Dataset
from nnseg.errors import ImageReadError
from nnseg.io import Geometry, Volume, read_volume


def largest_case_bytes(dataset: Dataset) -> int:
    """Rough in-memory size of the largest case's images (files decompressed; x4 for .gz), for sizing worker pools."""
    largest = max((sum(p.stat().st_size for p in c.image_files if p.is_file()) for c in dataset.cases), default=0)
    return largest * (4 if dataset.file_ending.endswith(".gz") else 1)


def read_case_images(case: Case, num_channels: int) -> Volume:
    """All channels of a case as one float32 ``(c, k, j, i)`` array with the first channel's geometry.

    Raises:
        ImageReadError: a file is unreadable, or channels disagree in count or shape.
    """
    arrays: list[np.ndarray] = []
    geometry: Geometry | None = None
    for path in case.image_files:  # one file per channel, or one 4D file (MSD)
        volume = read_volume(path)
        data = volume.array if volume.array.ndim == 4 else volume.array[None]
        if geometry is None:
            geometry = volume.geometry
        elif volume.geometry.shape != geometry.shape:
            raise ImageReadError(f"{path}: shape {volume.geometry.shape} differs from the case's first channel "
                                 f"{geometry.shape}")
        arrays.append(data.astype(np.float32, copy=False))
    if geometry is None:
        raise ImageReadError(f"case {case.case_id} lists no image file")
    images = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
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
