"""Map data from a configuration's voxel grid back to the original image grid (the inverse of preprocessing).

Resample (probabilities linearly, per class, then argmax or, for regions, threshold and paint in
``regions_class_order``; label maps via per-label masks), paste into
the nonzero box of the transposed original shape, transpose back. Used to export
predictions and to verify preprocessing (round trip). The full-size result is allocated
once, in the original axis order, and the cropped block is pasted through a transposed
view of it (no uncropped or transposed copies).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nnseg.cropping import box_slices
from nnseg.planning.plan import Plan, ResamplingPlan
from nnseg.preprocessing.preprocess import CaseProperties
from nnseg.preprocessing.resample import (
    SLAB_VOXELS,
    _linear_weights,
    interpolate_linear,
    resample_labels,
    resampled_argmax,
    separate_axis,
)

#: ``probabilities_to_labels`` methods: "interpolate" (F.interpolate in-plane, a slab of rows at a time),
#: "slabs" (the generic slab-wise resampling of :mod:`nnseg.preprocessing.resample`), "auto" (interpolate
#: where it applies: linear probabilities, no separately resampled coarse axis).
RESAMPLE_METHODS = ("auto", "interpolate", "slabs")


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


def _interpolated_argmax(probabilities: torch.Tensor, new_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Argmax over classes of ``probabilities`` ``(classes, k, j, i)`` resampled trilinearly to ``new_shape``.

    A slab of output rows at a time: the source rows it needs go through ``F.interpolate`` (bilinear, in
    plane), then are blended along the first axis with PyTorch's weights, so the labels are those of a
    whole-volume trilinear ``F.interpolate`` (and of the slab path) in the slab path's memory, faster.
    """
    first, second, w_first, w_second = (
        torch.from_numpy(a) for a in _linear_weights(probabilities.shape[1], new_shape[0])
    )
    rows_per_slab = max(1, SLAB_VOXELS // max(new_shape[1] * new_shape[2], 1))
    labels = torch.zeros(new_shape, dtype=dtype)
    for start in range(0, new_shape[0], rows_per_slab):
        stop = min(start + rows_per_slab, new_shape[0])
        low, high = int(first[start:stop].min()), int(second[start:stop].max()) + 1
        at_first, at_second = first[start:stop] - low, second[start:stop] - low
        weight_first, weight_second = w_first[start:stop, None, None], w_second[start:stop, None, None]
        best = None
        for index in range(probabilities.shape[0]):
            rows = probabilities[index, low:high].float()[None]
            planes = F.interpolate(rows, size=new_shape[1:], mode="bilinear", align_corners=False)[0]
            score = torch.addcmul(planes[at_second] * weight_second, planes[at_first], weight_first)
            if best is None:
                best = score
                continue
            labels[start:stop].masked_fill_(score > best, index)
            torch.fmax(best, score, out=best)  # NaN never wins, as in the slab path
    return labels


def probabilities_to_labels(
    probabilities: torch.Tensor | np.ndarray,
    properties: CaseProperties,
    plan: Plan,
    resampling: ResamplingPlan,
    *,
    method: str = "auto",
) -> np.ndarray:
    """Class probabilities ``(classes, *spatial)`` on the preprocessed grid -> label map on the original grid.

    Equivalent to resampling every class linearly and taking the argmax, but slab by slab: memory stays at
    the label map (uint8 up to 256 classes, else int16) plus small temporaries, whatever the class count.
    ``method``: one of :data:`RESAMPLE_METHODS`; both give the same labels where "interpolate" applies
    (``benchmarks/predict_work.py``), which was 1.3-8x faster in a CPU micro-benchmark (2 threads).
    """
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"method must be one of {', '.join(RESAMPLE_METHODS)}, got {method!r}")
    probabilities = torch.as_tensor(probabilities)
    axis = separate_axis(properties.spacing, _original_planning_spacing(properties, plan), resampling)
    scheme = plan.scheme
    if scheme.has_regions:  # resample each region's probability, then threshold and paint (not an argmax)
        shape = tuple(int(s) for s in properties.shape_after_crop)
        resampled = (
            probabilities.float()
            if tuple(probabilities.shape[1:]) == shape
            else interpolate_linear(probabilities.float(), shape, axis)
        )
        return _to_original(np.asarray(scheme.segmentation(resampled.numpy())), properties, plan)
    dtype = torch.uint8 if probabilities.shape[0] <= 256 else torch.int16
    new_shape = tuple(int(s) for s in properties.shape_after_crop)
    interpolate = axis is None and probabilities.ndim == 4 and probabilities.shape[0] > 1
    if method == "interpolate" or (method == "auto" and interpolate and resampling.probabilities_order == 1):
        if not interpolate:
            raise ValueError("method 'interpolate' needs 3D probabilities of 2+ classes and no separate axis")
        labels = _interpolated_argmax(probabilities, new_shape, dtype)
    else:
        classes = [(index, probabilities[index]) for index in range(probabilities.shape[0])]
        labels = resampled_argmax(classes, new_shape, axis=axis, dtype=dtype)
    return _to_original(labels.numpy(), properties, plan)


def restore_probabilities(
    probabilities: torch.Tensor | np.ndarray, properties: CaseProperties, plan: Plan, resampling: ResamplingPlan
) -> np.ndarray:
    """Class probabilities on the preprocessed grid -> float32 ``(classes, k, j, i)`` on the original grid.

    Outside the nonzero box the background class gets probability 1 (every region 0).
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
    full[:] = np.array(plan.scheme.background_probabilities(), dtype=np.float32).reshape(-1, *[1] * (full.ndim - 1))
    return _paste(resampled.numpy(), properties, plan, full)
