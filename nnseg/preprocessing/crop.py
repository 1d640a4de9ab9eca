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
    """Union over channels of ``images != 0``, holes filled. ``images`` is ``(c, *spatial)``, any layout."""
    mask = images[0] != 0
    for channel in images[1:]:
        mask |= channel != 0
    return _fill_holes(mask)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)``, reusing ``mask`` (overwritten) as the int8 background scipy needs.

    Grows the border inwards through the background; what it cannot reach is a hole. Same algorithm
    and result as scipy's function, with two fewer mask-sized arrays (its inverted mask and that
    mask's int8 copy).
    """
    background = np.logical_not(mask, out=mask).view(np.int8)
    seed = np.zeros(mask.shape, dtype=bool)  # only read: its zero pages never become resident
    filled = ndimage.binary_dilation(seed, iterations=-1, mask=background, border_value=1)
    return np.logical_not(filled, out=filled)


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
    cropped_labels = np.array(labels[slices], dtype=np.int16, order="C")
    outside = np.logical_not(mask)
    outside &= cropped_labels == 0
    cropped_labels[outside] = OUTSIDE_NONZERO_LABEL
    return cropped, cropped_labels, mask, box


def uncrop(cropped: np.ndarray, box: BoundingBox, full_shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Paste ``cropped`` (``(..., *spatial)``) back into an array of spatial shape ``full_shape``."""
    leading = cropped.shape[: cropped.ndim - len(full_shape)]
    out = np.full((*leading, *full_shape), fill, dtype=cropped.dtype)
    out[(Ellipsis,) + box_slices(box)] = cropped
    return out
