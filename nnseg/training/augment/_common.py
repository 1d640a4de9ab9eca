"""Helpers shared by the augmentation modules: mask indices, broadcasting views, argument checks."""

from __future__ import annotations

import torch
from torch import Tensor

Range = tuple[float, float]


def indices(mask: Tensor, device: torch.device) -> Tensor | None:
    """Indices of the True entries of a 1D CPU mask, on ``device``; None when there are none."""
    index = mask.nonzero().flatten()
    return index.to(device) if index.numel() else None


def expand(values: Tensor, ndim: int, leading: int = 1) -> Tensor:
    """View ``values`` (``leading`` dims) with trailing singleton dims up to ``ndim``."""
    return values.view(*values.shape, *[1] * (ndim - leading))


def check_patch_size(patch_size: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``patch_size`` as a tuple of 2 or 3 positive ints."""
    patch = tuple(int(p) for p in patch_size)
    if len(patch) not in (2, 3) or any(p < 1 for p in patch):
        raise ValueError(f"patch_size needs 2 or 3 positive sizes, got {list(patch_size)}")
    return patch


def check_axes(axes: tuple[int, ...], dims: int, name: str) -> tuple[int, ...]:
    """``axes`` as distinct ints in ``0..dims - 1``; ``name`` is the argument named in the error."""
    axes = tuple(int(a) for a in axes)
    if any(not 0 <= a < dims for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{name} must be distinct spatial axes in 0..{dims - 1}, got {list(axes)}")
    return axes


def check_range(bounds: Range, name: str, *, positive: bool = False, non_negative: bool = False) -> Range:
    """``bounds`` as floats ``(low, high)`` with ``low <= high`` (and ``low`` > 0 or >= 0 when asked)."""
    low, high = (float(v) for v in bounds)
    if low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(bounds)}")
    if positive and low <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(bounds)}")
    if non_negative and low < 0:
        raise ValueError(f"{name} must not be negative, got {tuple(bounds)}")
    return low, high


def check_batch(image: Tensor, seg: Tensor, patch_size: tuple[int, ...]) -> None:
    """A ``(B, C, *spatial)`` float image and matching integer seg, not smaller than ``patch_size``."""
    dims = len(patch_size)
    if image.ndim != dims + 2:
        raise ValueError(f"image must be (B, C, *spatial) with {dims} spatial axes, got shape {tuple(image.shape)}")
    if not image.dtype.is_floating_point:
        raise ValueError(f"image must be floating point, got {image.dtype}")
    if seg.ndim != image.ndim or seg.shape[0] != image.shape[0] or seg.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"seg shape {tuple(seg.shape)} does not match image shape {tuple(image.shape)} "
            "(expected (B, S, *spatial) with the same B and spatial size)"
        )
    if seg.dtype.is_floating_point or seg.dtype == torch.bool or seg.dtype.is_complex:
        raise ValueError(f"seg must be an integer tensor, got {seg.dtype}")
    if seg.device != image.device:
        raise ValueError(f"image is on {image.device} but seg is on {seg.device}")
    if any(s < p for s, p in zip(image.shape[2:], patch_size)):
        raise ValueError(f"input spatial size {tuple(image.shape[2:])} is smaller than patch_size {patch_size}")
