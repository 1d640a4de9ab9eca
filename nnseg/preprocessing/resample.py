"""Resampling of images, label maps and probabilities to a new voxel grid.

Images use cubic B-splines (scipy, ``grid_mode``: voxel-area alignment as skimage's
``resize`` used by nnU-Net). Label maps are resampled by interpolating each label's
mask linearly and taking, per voxel, the label whose mask is largest: never a value
that is not in the input, and smooth boundaries. Probabilities go through the same
linear path without the argmax.

Anisotropic data (one axis more than ``separate_axis_threshold`` times coarser than the
finest): the other axes are interpolated per slice at the requested order and the
coarse axis with nearest neighbour (order 0), so thick slices are not smeared into
each other. As in nnU-Net, the decision looks at the current spacing first, then at
the target spacing, and needs a single coarsest axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnseg.planning.plan import ResamplingPlan


def new_shape_for(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts after resampling (rounded, at least 1)."""
    return tuple(max(1, int(round(s * old / new))) for s, old, new in zip(shape, spacing, new_spacing))


def _single_coarse_axis(spacing: Sequence[float], threshold: float) -> int | None:
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.max() / spacing.min() <= threshold:
        return None
    coarsest = np.flatnonzero(spacing == spacing.max())
    return int(coarsest[0]) if len(coarsest) == 1 else None


def separate_axis(spacing: Sequence[float], new_spacing: Sequence[float], plan: ResamplingPlan) -> int | None:
    """The axis to resample separately at order 0, or None (see the module docstring)."""
    if plan.force_separate_axis is False or len(spacing) != 3:
        return None
    if plan.force_separate_axis:
        return int(np.argmax(spacing))
    axis = _single_coarse_axis(spacing, plan.separate_axis_threshold)
    if axis is None:
        axis = _single_coarse_axis(new_spacing, plan.separate_axis_threshold)
    return axis


def _zoom(volume: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    factors = [n / o for n, o in zip(new_shape, volume.shape)]
    if all(f == 1 for f in factors):
        return volume.copy()
    return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def resample_image(
    image: np.ndarray, new_shape: Sequence[int], *, order: int, axis: int | None, axis_order: int = 0
) -> np.ndarray:
    """Resample ``image`` ``(c, *spatial)`` float to ``new_shape`` (spline ``order``; ``axis`` separately)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(image.shape[1:]) == new_shape:
        return image.astype(np.float32, copy=True)
    out = np.empty((image.shape[0], *new_shape), dtype=np.float32)
    for c, channel in enumerate(image.astype(np.float32, copy=False)):
        if axis is None:
            out[c] = _zoom(channel, new_shape, order)
            continue
        in_plane_shape = [n for a, n in enumerate(new_shape) if a != axis]
        moved = np.moveaxis(channel, axis, 0)
        slices = np.stack([_zoom(s, in_plane_shape, order) for s in moved])
        slices = _zoom(slices, (new_shape[axis], *in_plane_shape), axis_order) if slices.shape[0] != new_shape[axis] \
            else slices
        out[c] = np.moveaxis(slices, 0, axis)
    return out


def interpolate_linear(masks: torch.Tensor, new_shape: Sequence[int], axis: int | None) -> torch.Tensor:
    """Linear interpolation of ``(n, *spatial)`` float masks; nearest along ``axis`` when given."""
    dims = masks.ndim - 1
    mode = "trilinear" if dims == 3 else "bilinear"
    x = masks[None]
    if axis is None:
        return F.interpolate(x, size=tuple(new_shape), mode=mode, align_corners=False)[0]
    in_plane = list(new_shape)
    in_plane[axis] = x.shape[2 + axis]
    x = F.interpolate(x, size=tuple(in_plane), mode=mode, align_corners=False)
    if x.shape[2 + axis] != new_shape[axis]:
        x = F.interpolate(x, size=tuple(new_shape), mode="nearest-exact")
    return x[0]


def resample_labels(labels: np.ndarray, new_shape: Sequence[int], *, axis: int | None) -> np.ndarray:
    """Resample an integer label map ``(*spatial)`` via per-label linear masks and argmax.

    Memory stays at two volumes whatever the number of labels (one label at a time).
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(labels.shape) == new_shape:
        return labels.copy()
    source = torch.from_numpy(np.ascontiguousarray(labels))
    masks = ((int(value), (source == int(value)).float()) for value in np.unique(labels))
    return resampled_argmax(masks, new_shape, axis=axis).numpy().astype(labels.dtype, copy=False)


def resampled_argmax(scores: Iterable[tuple[int, torch.Tensor]], new_shape: Sequence[int], *,
                     axis: int | None) -> torch.Tensor:
    """Argmax over ``(value, score map)`` pairs after resampling each map linearly to ``new_shape``.

    One map at a time (a running maximum), so memory stays at two volumes whatever the number
    of labels or classes; ties keep the earlier value. Returns int16 values.
    """
    new_shape = tuple(int(s) for s in new_shape)
    best_score = torch.full(new_shape, -torch.inf)
    best_value = torch.zeros(new_shape, dtype=torch.int16)
    for value, score in scores:
        score = score.float()
        if tuple(score.shape) != new_shape:
            score = interpolate_linear(score[None], new_shape, axis)[0]
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best_value[better] = value
    return best_value


def resample_probabilities(probabilities: np.ndarray | torch.Tensor, new_shape: Sequence[int], *,
                           axis: int | None) -> torch.Tensor:
    """Resample ``(classes, *spatial)`` probabilities linearly (nearest along ``axis``); returns a float tensor."""
    tensor = torch.as_tensor(probabilities).float()
    if tuple(tensor.shape[1:]) == tuple(new_shape):
        return tensor
    return interpolate_linear(tensor, new_shape, axis)
