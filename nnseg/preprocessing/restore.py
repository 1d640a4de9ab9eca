"""Map data from a configuration's voxel grid back to the original image grid (the inverse of preprocessing).

Resample (probabilities linearly, per class; label maps via per-label masks), paste into
the nonzero box of the transposed original shape, transpose back. Used to export
predictions and to verify preprocessing (round trip). The full-size result is allocated
once, in the original axis order, and the cropped block is pasted through a transposed
view of it (no uncropped or transposed copies).
"""

from __future__ import annotations

import numpy as np
import torch

from nnseg.planning.plan import Plan, ResamplingPlan
from nnseg.preprocessing.crop import box_slices
from nnseg.preprocessing.preprocess import CaseProperties
from nnseg.preprocessing.resample import interpolate_linear, resample_labels, resampled_argmax, separate_axis


def _original_planning_spacing(properties: CaseProperties, plan: Plan) -> tuple[float, ...]:
    return tuple(properties.original_spacing[a] for a in plan.transpose_forward)


def _paste(cropped: np.ndarray, properties: CaseProperties, plan: Plan, out: np.ndarray) -> np.ndarray:
    """Write ``cropped`` (planning order, ``(..., *spatial)``) into its box of ``out`` (original array order)."""
    leading = list(range(out.ndim - 3))
    planning = out.transpose([*leading, *[a + len(leading) for a in plan.transpose_forward]])
    planning[(Ellipsis,) + box_slices(properties.crop_box)] = cropped
    return out


def _to_original(cropped: np.ndarray, properties: CaseProperties, plan: Plan, fill: int = 0) -> np.ndarray:
    """``cropped`` pasted into a ``fill``-ed C-contiguous array of the original shape and axis order."""
    shape = (*cropped.shape[:-3], *properties.original_geometry.shape)
    return _paste(cropped, properties, plan, np.full(shape, fill, dtype=cropped.dtype))


def restore_labels(seg: np.ndarray, properties: CaseProperties, plan: Plan, resampling: ResamplingPlan) -> np.ndarray:
    """A label map on the preprocessed grid -> the original image grid (array order). -1 becomes 0."""
    axis = separate_axis(properties.spacing, _original_planning_spacing(properties, plan), resampling)
    labels = resample_labels(np.where(seg < 0, 0, seg), properties.shape_after_crop, axis=axis)
    return _to_original(labels, properties, plan)


def probabilities_to_labels(
    probabilities: torch.Tensor | np.ndarray, properties: CaseProperties, plan: Plan, resampling: ResamplingPlan
) -> np.ndarray:
    """Class probabilities ``(classes, *spatial)`` on the preprocessed grid -> label map on the original grid.

    Equivalent to resampling every class linearly and taking the argmax, but slab by slab: memory stays at
    the label map (uint8 up to 256 classes, else int16) plus small temporaries, whatever the class count.
    """
    probabilities = torch.as_tensor(probabilities)
    axis = separate_axis(properties.spacing, _original_planning_spacing(properties, plan), resampling)
    classes = [(index, probabilities[index]) for index in range(probabilities.shape[0])]
    dtype = torch.uint8 if len(classes) <= 256 else torch.int16
    labels = resampled_argmax(classes, properties.shape_after_crop, axis=axis, dtype=dtype)
    return _to_original(labels.numpy(), properties, plan)


def restore_probabilities(
    probabilities: torch.Tensor | np.ndarray, properties: CaseProperties, plan: Plan, resampling: ResamplingPlan
) -> np.ndarray:
    """Class probabilities on the preprocessed grid -> float32 ``(classes, k, j, i)`` on the original grid.

    Outside the nonzero box the background class gets probability 1.
    """
    probabilities = torch.as_tensor(probabilities).float()
    axis = separate_axis(properties.spacing, _original_planning_spacing(properties, plan), resampling)
    shape = properties.shape_after_crop
    resampled = (
        probabilities
        if tuple(probabilities.shape[1:]) == tuple(shape)
        else interpolate_linear(probabilities, shape, axis)
    )
    full = np.zeros((resampled.shape[0], *properties.original_geometry.shape), dtype=np.float32)
    full[0] = 1.0
    return _paste(resampled.numpy(), properties, plan, full)
