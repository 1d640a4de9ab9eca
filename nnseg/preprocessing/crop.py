"""Crop to the nonzero bounding box, as nnU-Net does, and undo it.

The nonzero mask is the union over channels of ``image != 0`` with holes filled, so
dark structures inside the body (air in lungs, fluid) stay inside the box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Label value written where the image is zero (outside the body) after cropping.
OUTSIDE_NONZERO_LABEL = -1

BoundingBox = tuple[tuple[int, int], ...]


def nonzero_mask(images: np.ndarray) -> np.ndarray:
    """Union over channels of ``images != 0``, holes filled. ``images`` is ``(c, *spatial)``."""
    mask = np.any(images != 0, axis=0)
    return ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> BoundingBox:
    """Half-open ``((start, stop), ...)`` box of the True voxels; the whole array when none is True."""
    if not mask.any():
        return tuple((0, int(n)) for n in mask.shape)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def box_slices(box: BoundingBox) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


def crop_to_nonzero(
    images: np.ndarray, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, BoundingBox]:
    """Crop ``images`` ``(c, *spatial)`` and ``labels`` ``(*spatial)`` to the nonzero box.

    Returns:
        (cropped images, cropped labels with background outside the mask set to
        :data:`OUTSIDE_NONZERO_LABEL` (None when no labels), cropped mask, box).
    """
    mask = nonzero_mask(images)
    box = bounding_box(mask)
    slices = box_slices(box)
    mask = mask[slices]
    cropped = images[(slice(None), *slices)]
    if labels is None:
        return cropped, None, mask, box
    cropped_labels = labels[slices].astype(np.int16, copy=True)
    cropped_labels[(cropped_labels == 0) & ~mask] = OUTSIDE_NONZERO_LABEL
    return cropped, cropped_labels, mask, box


def uncrop(cropped: np.ndarray, box: BoundingBox, full_shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Paste ``cropped`` (``(..., *spatial)``) back into an array of spatial shape ``full_shape``."""
    leading = cropped.shape[: cropped.ndim - len(full_shape)]
    out = np.full((*leading, *full_shape), fill, dtype=cropped.dtype)
    out[(..., *box_slices(box))] = cropped
    return out
