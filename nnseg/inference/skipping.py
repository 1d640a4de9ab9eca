"""Less work per case at (nearly) equal Dice: which mirrorings to run, which windows to skip.

Test-time augmentation (``--tta``): ``full`` averages every combination of flipped spatial axes
(nnU-Net's recipe, 2^dims network inputs per window), ``fast`` only the in-plane axes (the axes
after the coarsest one in planning order; 4 inputs per 3D window; the last axis only for 2D
windows, 2 inputs), ``none`` no mirroring. The choice of axes is not yet confirmed by
``benchmarks/predict_work.py``, which also measures one-axis candidates.

Air skipping (``--skip-air``, models whose channels are all CT-normalized): the body is where a
CT channel is above ``AIR_HU`` (compared on the normalized data, after the plan's clipping),
holes (lungs, bowel gas) filled slice by slice along every axis, dilated by ``AIR_MARGIN_MM``.
Sliding windows holding no body voxel are not run: their voxels are background. Every voxel of
the body keeps all its windows, so only air far from the body can change. A model with any
non-CT channel never skips (its intensities say nothing about air).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from nnseg.cropping import AIR_HU, margin_voxels
from nnseg.cropping import BODY_MARGIN_MM as AIR_MARGIN_MM
from nnseg.inference.config import TTA_MODES
from nnseg.options import OptionError
from nnseg.planning.plan import ChannelNormalization

_EPS = 1e-8


def mirror_axes_for(tta: str, dimensions: int) -> tuple[int, ...]:
    """Spatial axes whose flips are averaged for ``--tta`` ``tta`` with ``dimensions``-D windows."""
    if tta == "full":
        return tuple(range(dimensions))
    if tta == "fast":
        return tuple(range(1, dimensions)) if dimensions == 3 else (dimensions - 1,)
    if tta == "none":
        return ()
    raise OptionError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def ct_body_threshold(normalization: ChannelNormalization, hu: float = AIR_HU) -> float | None:
    """``hu`` mapped by a CT channel's normalization (clipping first), or None when the mapping can't
    separate air from body (the upper clip is at or below ``hu``).

    When the lower clip is above ``hu`` every value up to it looks alike after normalization; the
    threshold is then the clip itself (the labelled foreground lies above it by construction of the
    clip: its 0.5 percentile).
    """
    if not normalization.is_ct or normalization.mean is None:
        return None
    high = normalization.clip_high
    if high is not None and high <= hu:
        return None
    value = hu if normalization.clip_low is None else max(hu, normalization.clip_low)
    return (value - normalization.mean) / max(normalization.std or 0.0, _EPS)


def _fill_holes_in_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that doesn't reach a slice's edge filled, slice by slice
    along each axis (a lung joined to the outside through the airway in 3D is still a hole in its slices)."""
    filled = mask.copy()
    for axis in range(mask.ndim):
        structure = np.zeros((3,) * mask.ndim, dtype=bool)
        plane = [slice(None)] * mask.ndim
        plane[axis] = slice(1, 2)
        structure[tuple(plane)] = ndimage.generate_binary_structure(mask.ndim, 1)[tuple(plane)]
        labels, count = ndimage.label(~mask, structure)
        if count == 0:
            continue
        outside = np.zeros(count + 1, dtype=bool)
        for other in range(mask.ndim):
            if other == axis:
                continue
            for edge in (0, -1):
                outside[np.take(labels, edge, axis=other)] = True
        outside[0] = True
        filled |= ~outside[labels]
    return filled


def air_body_mask(
    data: np.ndarray,
    normalization: Sequence[ChannelNormalization],
    spacing: Sequence[float],
    *,
    margin_mm: float = AIR_MARGIN_MM,
    hu: float = AIR_HU,
) -> np.ndarray | None:
    """Body mask ``(*spatial)`` of normalized CT ``data`` ``(c, *spatial)``; None when not every channel is
    CT-normalized (or a channel's clipping hides air): then nothing may be skipped."""
    if not normalization or len(normalization) != data.shape[0]:
        return None
    thresholds = [ct_body_threshold(n, hu) for n in normalization]
    if any(t is None for t in thresholds):
        return None
    body = np.zeros(data.shape[1:], dtype=bool)
    for channel, threshold in zip(data, thresholds):
        body |= channel > np.float32(threshold)
    if body.ndim == 3:
        body = _fill_holes_in_slices(body)
    dilated = body.view(np.uint8)
    for axis, step in enumerate(spacing[-body.ndim :]):
        radius = margin_voxels(margin_mm, step)
        if radius > 0:
            dilated = ndimage.maximum_filter1d(dilated, 2 * radius + 1, axis=axis, mode="constant", cval=0)
    return dilated.view(bool)
