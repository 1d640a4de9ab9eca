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

Memory (a 512x512x600 CT is 600 MiB as float32): a whole-volume spline zoom of more than
``LEAN_SPLINE_VOXELS`` keeps one float32 copy of the (edge-padded) channel and filters it
in place, where scipy's ``zoom`` holds a padded copy plus float64 coefficients (3.4x the
channel); results differ from scipy's by float32 rounding only. Label maps
and probabilities are resampled with their argmax slab by slab along the first axis,
bit for bit as ``F.interpolate`` would, so only the result is ever full size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnseg.planning.plan import ResamplingPlan

#: Edge voxels scipy's ``zoom`` pads each side with before its spline prefilter in mode "nearest".
SPLINE_PAD = 12
#: Channels of more voxels are spline-zoomed by :func:`_spline_zoom` (float32, in place), smaller ones by scipy.
LEAN_SPLINE_VOXELS = 1 << 25
#: Output voxels resampled at a time by the slab-wise linear resampling (a few MiB of temporaries).
SLAB_VOXELS = 1 << 22

#: Called with (channel index, the channel) to change it in place before it is resampled.
PrepareChannel = Callable[[int, np.ndarray], object]
#: (score index, source indices along the first axis) -> float32 scores of those source slices.
ScoreRows = Callable[[int, np.ndarray], torch.Tensor]


def new_shape_for(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts after resampling (rounded, at least 1)."""
    return tuple(max(1, int(round(s * old / new))) for s, old, new in zip(shape, spacing, new_spacing))


def _single_coarse_axis(spacing: Sequence[float], threshold: float) -> int | None:
    values = np.asarray(spacing, dtype=np.float64)
    if values.max() / values.min() <= threshold:
        return None
    coarsest = np.flatnonzero(values == values.max())
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


# ---------------------------------------------------------------------------------------------- images


def _zoom(volume: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    factors = [n / o for n, o in zip(new_shape, volume.shape)]
    if all(f == 1 for f in factors):
        return volume.copy()
    return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def _fill_edge_padding(padded: np.ndarray, pad: int) -> None:
    """Fill the ``pad`` border voxels of every axis with the nearest inner voxel, as ``np.pad(mode="edge")``."""
    for axis, size in enumerate(padded.shape):
        inner = tuple(slice(pad, n - pad) for n in padded.shape[axis + 1 :])
        before = (slice(None),) * axis
        low, high = (slice(0, pad), slice(pad, pad + 1)), (slice(size - pad, size), slice(size - pad - 1, size - pad))
        for border, edge in (low, high):
            padded[(*before, border, *inner)] = padded[(*before, edge, *inner)]


def _spline_zoom(
    source: np.ndarray, new_shape: tuple[int, ...], order: int, prepare: Callable[[np.ndarray], object] | None
) -> np.ndarray:
    """``ndimage.zoom(source, order=order, mode="nearest", grid_mode=True)`` as float32, in a third of the memory.

    The channel is copied once into an edge-padded float32 buffer (``prepare`` changes the copy in place,
    before the padding is filled) and its spline coefficients are computed in place there, where scipy
    makes a padded copy and float64 coefficients. The result differs from scipy's by float32 rounding
    of the coefficients (about 1e-7 relative).
    """
    padded = np.empty([n + 2 * SPLINE_PAD for n in source.shape], dtype=np.float32)
    inner = padded[tuple(slice(SPLINE_PAD, SPLINE_PAD + n) for n in source.shape)]
    inner[...] = source
    if prepare is not None:
        prepare(inner)
    del inner
    _fill_edge_padding(padded, SPLINE_PAD)
    ndimage.spline_filter(padded, order, output=padded, mode="nearest")
    scale = np.divide(np.array(source.shape, dtype=np.float64), np.array(new_shape, dtype=np.float64))
    # zoom's grid-mode source coordinate ((o + 0.5) * scale - 0.5), shifted into the padded buffer
    offset = 0.5 * scale - 0.5 + SPLINE_PAD
    return ndimage.affine_transform(
        padded, scale, offset=offset, output_shape=new_shape, order=order, mode="nearest", prefilter=False
    )


def _zoom_separately(
    channel: np.ndarray, new_shape: tuple[int, ...], order: int, axis: int, axis_order: int
) -> np.ndarray:
    """Slices across ``axis`` at ``order``, then ``axis`` itself at ``axis_order``."""
    in_plane_shape = [n for a, n in enumerate(new_shape) if a != axis]
    moved = np.moveaxis(channel, axis, 0)
    slices = np.stack([_zoom(s, in_plane_shape, order) for s in moved])
    if slices.shape[0] != new_shape[axis]:
        slices = _zoom(slices, (new_shape[axis], *in_plane_shape), axis_order)
    return np.moveaxis(slices, 0, axis)


def resample_image(
    image: np.ndarray,
    new_shape: Sequence[int],
    *,
    order: int,
    axis: int | None,
    axis_order: int = 0,
    prepare: PrepareChannel | None = None,
) -> np.ndarray:
    """Resample ``image`` ``(c, *spatial)`` to ``new_shape`` (spline ``order``; ``axis`` separately); float32.

    Args:
        image: any dtype and memory layout (e.g. a transposed, cropped view); it is not changed.
        prepare: called as ``prepare(c, channel)`` on a private float32 copy of each channel before it is
            resampled, to change it in place (e.g. normalize it), so the caller needs no copy of its own.
    """
    new_shape = tuple(int(s) for s in new_shape)
    out = np.empty((image.shape[0], *new_shape), dtype=np.float32)
    for c in range(image.shape[0]):
        hook = None if prepare is None else functools.partial(prepare, c)
        if tuple(image.shape[1:]) == new_shape:
            out[c] = image[c]
            if hook is not None:
                hook(out[c])
        elif axis is None and order > 1 and image[c].size > LEAN_SPLINE_VOXELS:
            out[c] = _spline_zoom(image[c], new_shape, order, hook)
        else:
            channel = np.array(image[c], dtype=np.float32, order="C")
            if hook is not None:
                hook(channel)
            out[c] = (
                _zoom(channel, new_shape, order)
                if axis is None
                else _zoom_separately(channel, new_shape, order, axis, axis_order)
            )
            del channel
    return out


# ---------------------------------------------------------------------------------------------- linear


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


def _linear_weights(size: int, new_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: (first source index, second source index, their weights), as PyTorch's linear mode.

    Float32 arithmetic with the fused multiply-add of PyTorch's CPU kernel (emulated in float64, exact
    for float32 operands), so the weights are bit for bit those of ``F.interpolate(align_corners=False)``.
    """
    scale = np.float32(size) / np.float32(new_size)
    centers = np.arange(new_size, dtype=np.float32) + np.float32(0.5)
    source = (np.float64(scale) * centers.astype(np.float64) - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0))
    first = source.astype(np.int64)
    weight = np.clip(source - first.astype(np.float32), 0, 1).astype(np.float32)
    second = np.where(first < size - 1, first + 1, first)
    return first, second, np.float32(1) - weight, weight


def _nearest_indices(size: int, new_size: int) -> np.ndarray:
    """Source index per output index of PyTorch's "nearest-exact" mode (float32 arithmetic, as its kernel)."""
    scale = np.float32(size) / np.float32(new_size)
    centers = (np.arange(new_size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(centers).astype(np.int64), size - 1)


def _lerp(
    a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``a * wa + b * wb`` rounded as PyTorch's linear kernel: ``fma(a, wa, b * wb)`` (``addcmul`` fuses alike)."""
    return torch.addcmul(b * wb, a, wa, out=out)


def _resample_axis(x: torch.Tensor, dim: int, new_size: int, nearest: bool) -> torch.Tensor:
    """Linear (or nearest-exact) resampling of float32 ``x`` along ``dim``, identical to ``F.interpolate``."""
    size = x.shape[dim]
    if size == new_size:
        return x
    if nearest:
        return x.index_select(dim, torch.from_numpy(_nearest_indices(size, new_size)))
    first, second, w_first, w_second = _linear_weights(size, new_size)
    shape = [1] * x.ndim
    shape[dim] = new_size
    return _lerp(
        x.index_select(dim, torch.from_numpy(first)),
        x.index_select(dim, torch.from_numpy(second)),
        torch.from_numpy(w_first).view(shape),
        torch.from_numpy(w_second).view(shape),
    )


def _argmax_by_slabs(
    values: Sequence[int],
    rows_of: ScoreRows,
    source_shape: Sequence[int],
    new_shape: tuple[int, ...],
    axis: int | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Value of the largest resampled score map per voxel (ties: the earlier map), one output slab at a time.

    Map ``i`` (scoring ``values[i]``) is resampled linearly (nearest-exact along ``axis``) exactly as
    :func:`interpolate_linear` would, innermost axis first, but only the source slices an output slab
    needs are read, so memory is the result plus a few slabs whatever the size and number of maps.
    A NaN score never wins; where no score beats -inf the value is 0.
    """
    rest, source_rest = int(np.prod(new_shape[1:])), int(np.prod(source_shape[1:]))
    rows_per_slab = max(1, min(SLAB_VOXELS // max(rest, 1), SLAB_VOXELS // max(2 * source_rest, 1)))
    linear = source_shape[0] != new_shape[0] and axis != 0
    if linear:
        first, second, *weights = _linear_weights(source_shape[0], new_shape[0])
        w_first, w_second = (torch.from_numpy(w) for w in weights)
    else:
        first = second = _nearest_indices(source_shape[0], new_shape[0])
    result = torch.zeros(new_shape, dtype=dtype)
    for start in range(0, new_shape[0], rows_per_slab):
        stop = min(start + rows_per_slab, new_shape[0])
        rows = np.unique(np.concatenate([first[start:stop], second[start:stop]]))
        at_first, at_second = np.searchsorted(rows, first), np.searchsorted(rows, second)
        best, best_score = result[start:stop], torch.full((stop - start, *new_shape[1:]), -torch.inf)
        score = torch.empty_like(best_score)
        for index, value in enumerate(values):
            planes = rows_of(index, rows).float()
            for dim in range(planes.ndim - 1, 0, -1):  # innermost axis first, as PyTorch nests them
                planes = _resample_axis(planes, dim, new_shape[dim], nearest=dim == axis)
            for row in range(start, stop):  # a row at a time: views of the planes, no gathered copies
                if linear:
                    _lerp(
                        planes[at_first[row]],
                        planes[at_second[row]],
                        w_first[row],
                        w_second[row],
                        out=score[row - start],
                    )
                else:
                    score[row - start] = planes[at_first[row]]
            best.masked_fill_(score > best_score, value)
            torch.fmax(best_score, score, out=best_score)  # = where(score > best, score, best): NaN never wins
    return result


def resampled_argmax(
    scores: Iterable[tuple[int, torch.Tensor]],
    new_shape: Sequence[int],
    *,
    axis: int | None,
    dtype: torch.dtype = torch.int16,
) -> torch.Tensor:
    """Argmax over ``(value, score map)`` pairs after resampling each map linearly to ``new_shape``.

    Slab by slab (see :func:`_argmax_by_slabs`): memory is the result plus small temporaries whatever the
    number of maps; ties keep the earlier value. Returns ``dtype`` values (int16 unless told).
    """
    pairs = list(scores)
    maps = [score for _, score in pairs]
    if any(tuple(m.shape) != tuple(maps[0].shape) for m in maps):
        raise ValueError(f"score maps differ in shape: {[tuple(m.shape) for m in maps]}")
    return _argmax_by_slabs(
        [value for value, _ in pairs],
        lambda i, rows: maps[i][torch.from_numpy(rows)],
        tuple(maps[0].shape),
        tuple(int(s) for s in new_shape),
        axis,
        dtype,
    )


def _unique_values(labels: np.ndarray) -> np.ndarray:
    """``np.unique(labels)``, a slab at a time (no sorted full-size copy)."""
    rows = max(1, 8 * SLAB_VOXELS // max(int(np.prod(labels.shape[1:])), 1))
    found = [np.unique(labels[start : start + rows]) for start in range(0, labels.shape[0], rows)]
    return np.unique(np.concatenate(found))


_TORCH_INTEGER = {np.dtype(t): getattr(torch, t) for t in ("int8", "uint8", "int16", "int32", "int64")}


def resample_labels(labels: np.ndarray, new_shape: Sequence[int], *, axis: int | None) -> np.ndarray:
    """Resample an integer label map ``(*spatial)`` via per-label linear masks and argmax.

    The masks are made slab by slab: memory stays at the result plus small temporaries whatever the number
    of labels.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(labels.shape) == new_shape:
        return labels.copy()
    values = _unique_values(labels)

    def mask_rows(index: int, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(labels[rows] == values[index])

    dtype = _TORCH_INTEGER.get(labels.dtype, torch.int16)
    resampled = _argmax_by_slabs([int(v) for v in values], mask_rows, labels.shape, new_shape, axis, dtype)
    return resampled.numpy().astype(labels.dtype, copy=False)
