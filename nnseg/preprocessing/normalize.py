"""Intensity normalization per channel, as planned (see ``ChannelNormalization``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnseg.planning.plan import ChannelNormalization

EPS = 1e-8


def normalize_channel(channel: np.ndarray, plan: ChannelNormalization, inside: np.ndarray | None) -> np.ndarray:
    """Normalize one channel: in place when it is float32 (any memory layout), else on a float32 copy.

    Args:
        channel: the channel's voxels.
        plan: the scheme and its dataset statistics.
        inside: the nonzero mask (True inside the body); used when ``plan.use_nonzero_mask``.
    """
    image = channel.astype(np.float32, copy=False)
    if plan.scheme == "ct":
        np.clip(image, plan.clip_low, plan.clip_high, out=image)
        image -= np.float32(plan.mean)
        image /= np.float32(max(plan.std or 0.0, EPS))
    elif plan.scheme == "zscore":
        if plan.use_nonzero_mask and inside is not None:
            values = image[inside]
            mean, std = (float(values.mean()), float(values.std())) if values.size else (0.0, 1.0)
            values -= mean
            values /= max(std, EPS)
            image[inside] = values
        else:
            image -= np.float32(image.mean())
            image /= np.float32(max(float(image.std()), EPS))
    elif plan.scheme == "rescale_to_0_1":
        low, high = float(image.min()), float(image.max())
        image -= np.float32(low)
        image /= np.float32(max(high - low, EPS))
    elif plan.scheme == "rgb_to_0_1":
        image /= np.float32(255.0)
    elif plan.scheme != "none":
        raise ValueError(f"unknown normalization scheme {plan.scheme!r}")
    return image


def channel_normalizer(
    plans: Sequence[ChannelNormalization], inside: np.ndarray | None, channels: int
) -> Callable[[int, np.ndarray], np.ndarray]:
    """``(c, channel) -> normalize_channel(channel, plans[c], inside)`` for a ``channels``-channel image.

    E.g. ``resample_image(..., prepare=channel_normalizer(...))`` normalizes each channel in the resampler's
    own float32 copy, so no normalized copy of the whole image is made. ``inside`` is kept only when a
    channel is z-scored inside the mask (the caller can then free a mask nothing else needs).
    """
    if channels != len(plans):
        raise ValueError(f"{channels} channels but the plan normalizes {len(plans)}")
    kept = inside if any(p.scheme == "zscore" and p.use_nonzero_mask for p in plans) else None
    return lambda c, channel: normalize_channel(channel, plans[c], kept)


def normalize(images: np.ndarray, plans: Sequence[ChannelNormalization], inside: np.ndarray | None) -> np.ndarray:
    """Normalize ``images`` ``(c, *spatial)`` channel by channel; returns a float32 copy."""
    normalize_in_place = channel_normalizer(plans, inside, images.shape[0])
    out = images.astype(np.float32, copy=True)
    for c in range(out.shape[0]):
        normalize_in_place(c, out[c])
    return out
