"""Intensity normalization per channel, as planned (see ``ChannelNormalization``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnseg.planning.plan import ChannelNormalization

EPS = 1e-8


def normalize_channel(channel: np.ndarray, plan: ChannelNormalization, inside: np.ndarray | None) -> np.ndarray:
    """Normalize one channel (float32, in place where possible).

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
            image[inside] = (values - mean) / max(std, EPS)
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


def normalize(images: np.ndarray, plans: Sequence[ChannelNormalization], inside: np.ndarray | None) -> np.ndarray:
    """Normalize ``images`` ``(c, *spatial)`` channel by channel; returns float32."""
    if images.shape[0] != len(plans):
        raise ValueError(f"{images.shape[0]} channels but the plan normalizes {len(plans)}")
    out = images.astype(np.float32, copy=True)
    for c, plan in enumerate(plans):
        out[c] = normalize_channel(out[c], plan, inside)
    return out
