"""Spatial steps: center crop, rotation/scaling (one ``grid_sample``), mirroring, and the sampling size.

Tensors are ``(B, C, *spatial)`` images and ``(B, S, *spatial)`` integer segmentations, spatial axes in
array order. Per-sample choices arrive as CPU tensors (see :class:`~.pipeline.AugmentationParams`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nnseg.training.augment._common import indices

#: Anisotropy above which nnU-Net augments 3D patches slice-wise ("dummy 2D"): max(patch) / patch[0] > 3.
ANISOTROPY_THRESHOLD = 3.0
#: Scale range nnU-Net uses when it enlarges the sampled region (not the training scale range; kept for parity).
SAMPLING_SCALE_RANGE = (0.85, 1.25)


def center_crop(tensor: Tensor, patch_size: Sequence[int]) -> Tensor:
    """The centered ``patch_size`` region of ``tensor``'s trailing axes, leading axes kept (a view).

    An axis of size ``s`` keeps ``[(s - p) // 2, (s - p) // 2 + p)``: the crop the augmentation applies to
    samples it does not resample, so validation patches line up with training patches.

    Raises:
        ValueError: ``patch_size`` is empty or not positive, or ``tensor`` is smaller than it.
    """
    patch = tuple(int(p) for p in patch_size)
    if not patch or any(p < 1 for p in patch):
        raise ValueError(f"patch_size needs positive sizes, got {list(patch_size)}")
    spatial = tuple(tensor.shape[-len(patch) :])
    if tensor.ndim < len(patch) or any(s < p for s, p in zip(spatial, patch)):
        raise ValueError(f"cannot center-crop shape {tuple(tensor.shape)} to patch_size {patch}")
    leading = (slice(None),) * (tensor.ndim - len(patch))
    return tensor[(*leading, *(slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(spatial, patch)))]


def spatial_transform(
    image: Tensor,
    seg: Tensor,
    resample: Tensor,
    angles: Tensor,
    scales: Tensor,
    *,
    patch_size: tuple[int, ...],
    rotation_axes: tuple[int, ...],
    scale_axes: tuple[int, ...],
    interpolation: str = "linear",
    seg_interpolation: str = "nearest",
    seg_border_value: int = 0,
) -> tuple[Tensor, Tensor]:
    """Rotate and scale the samples where ``resample`` is set, center-crop the others; new tensors.

    Args:
        resample: ``(B,)`` bool, the sample goes through ``grid_sample``; angles ``(B, R)`` radians,
            scales ``(B,)``: see :func:`affine_theta`.
        interpolation: image mode, "linear" or "cubic" (2D only); seg_interpolation: "nearest" or
            "linear" (one-hot, argmax); seg_border_value: label sampled outside the input.

    Returns:
        contiguous ``(image, seg)`` of spatial size ``patch_size``; inputs are not modified.
    """
    out_image = center_crop(image, patch_size).clone(memory_format=torch.contiguous_format)
    out_seg = center_crop(seg, patch_size).clone(memory_format=torch.contiguous_format)
    index = indices(resample, image.device)
    if index is None:
        return out_image, out_seg
    theta = affine_theta(
        angles[resample], scales[resample], tuple(image.shape[2:]), patch_size, rotation_axes, scale_axes
    )
    theta = theta.to(device=image.device, dtype=torch.float64 if image.dtype == torch.float64 else torch.float32)
    grid = _affine_grid(theta, patch_size)
    mode = "bilinear" if interpolation == "linear" else "bicubic"
    every = index.numel() == image.shape[0]  # no gathered copy of the (large) input when all samples move
    out_image[index] = F.grid_sample(
        image if every else image[index], grid.to(image.dtype), mode=mode, padding_mode="zeros", align_corners=False
    )
    out_seg[index] = _resample_seg(seg if every else seg[index], grid, patch_size, seg_interpolation, seg_border_value)
    return out_image, out_seg


def affine_theta(
    angles: Tensor,
    scales: Tensor,
    in_shape: tuple[int, ...],
    patch_size: tuple[int, ...],
    rotation_axes: tuple[int, ...],
    scale_axes: tuple[int, ...],
) -> Tensor:
    """``(N, D, D + 1)`` affine_grid matrices: output patch (normalized) -> input region (normalized).

    In voxel units centered on the patch, input = rotation @ scaling @ output + shift; the shift aligns
    the patch center with :func:`center_crop`. 3D rotations compose about ``rotation_axes`` in order
    (``angles[:, k]`` about ``rotation_axes[k]``); 2D rotates in-plane by ``angles[:, 0]``. The scale
    factor applies to ``scale_axes`` (> 1 samples a larger region).
    """
    dims = len(patch_size)
    n = angles.shape[0]
    matrix = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
    if dims == 2:
        matrix = _plane_rotation(angles[:, 0], 0, 1, dims)
    else:
        for column, axis in enumerate(rotation_axes):
            first, second = (a for a in range(3) if a != axis)
            matrix = matrix @ _plane_rotation(angles[:, column], first, second, dims)
    axis_scales = torch.ones(n, dims, dtype=torch.float64)
    axis_scales[:, list(scale_axes)] = scales[:, None].to(torch.float64)
    matrix = matrix * axis_scales[:, None, :]
    size_in = torch.tensor(in_shape, dtype=torch.float64)
    size_out = torch.tensor(patch_size, dtype=torch.float64)
    linear = matrix * size_out[None, None, :] / size_in[None, :, None]
    shift = torch.tensor([(s - p) // 2 - (s - p) / 2 for s, p in zip(in_shape, patch_size)], dtype=torch.float64)
    translation = (2 * shift / size_in).expand(n, dims)
    # affine_grid orders coordinates x, y(, z) = last array axis first
    linear = linear.flip(-1).flip(-2)
    translation = translation.flip(-1)
    return torch.cat([linear, translation[:, :, None]], dim=2)


def mirror(image: Tensor, seg: Tensor, flips: Tensor) -> None:
    """Flip, in place, sample ``b`` of ``image`` and ``seg`` along spatial axis ``d`` where ``flips[b, d]``."""
    # one flip per distinct combination of axes (at most 2 ** D), not one per axis
    for pattern in flips.unique(dim=0):
        dims = [axis + 2 for axis in pattern.nonzero().flatten().tolist()]
        if not dims:
            continue
        index = indices((flips == pattern).all(1), image.device)
        image[index] = image[index].flip(dims)
        seg[index] = seg[index].flip(dims)


def sampling_patch_size(
    patch_size: tuple[int, ...],
    max_angle: float,
    rotation_axes: tuple[int, ...] | None = None,
    scale_axes: tuple[int, ...] | None = None,
    min_scale: float = SAMPLING_SCALE_RANGE[0],
) -> tuple[int, ...]:
    """nnU-Net's ``get_patch_size``: the region to sample before rotation, scaling and center crop.

    The patch's extent vector is rotated by ``min(max_angle, 90°)`` about each rotation axis in turn
    (not jointly), the per-axis maximum of the absolute results is taken, axes that are scaled are
    divided by ``min_scale`` (nnU-Net uses 0.85 here, not the training minimum of 0.7), then floored.
    Axes neither rotated nor scaled keep the patch size (nnU-Net's dummy-2D rule). This is an
    approximation: rotated corners can still fall outside the region and are then padded with zeros.
    """
    dims = len(patch_size)
    rotation_axes = tuple(range(dims)) if rotation_axes is None else rotation_axes
    scale_axes = tuple(range(dims)) if scale_axes is None else scale_axes
    angle = min(abs(max_angle), math.pi / 2)
    extent = [float(p) for p in patch_size]
    # the plane of each rotation, ordered as batchgenerators' rotate_coords_2d/3d: (axis gaining a*cos + b*sin, other)
    planes = [(0, 1)] if dims == 2 else [((axis + 1) % 3, (axis + 2) % 3) for axis in rotation_axes]
    moved: set[int] = set()
    if angle > 0:
        for first, second in planes:
            a, b = patch_size[first], patch_size[second]
            extent[first] = max(extent[first], abs(a * math.cos(angle) + b * math.sin(angle)))
            extent[second] = max(extent[second], abs(-a * math.sin(angle) + b * math.cos(angle)))
            moved.update((first, second))
    for axis in range(dims):
        if axis in scale_axes:
            extent[axis] /= min_scale
        if axis not in moved and axis not in scale_axes:
            extent[axis] = patch_size[axis]
    return tuple(int(e) for e in extent)


def _plane_rotation(angles: Tensor, first: int, second: int, dims: int) -> Tensor:
    """``(N, dims, dims)`` rotations by ``angles`` in the plane of axes ``first`` and ``second``."""
    matrix = torch.eye(dims, dtype=torch.float64).repeat(angles.shape[0], 1, 1)
    cos, sin = torch.cos(angles.to(torch.float64)), torch.sin(angles.to(torch.float64))
    matrix[:, first, first] = cos
    matrix[:, first, second] = -sin
    matrix[:, second, first] = sin
    matrix[:, second, second] = cos
    return matrix


def _affine_grid(theta: Tensor, size: tuple[int, ...]) -> Tensor:
    """``F.affine_grid(theta, (N, 1, *size), align_corners=False)``, built from per-axis terms.

    The grid is affine in each output index, so it is a broadcast sum of ``D`` small tensors plus the
    translation: one full-size write instead of a ``(N, voxels, D + 1) @ (D + 1, D)`` matmul.
    """
    n, dims = theta.shape[0], len(size)
    grid = theta[:, :, dims].reshape(n, *[1] * dims, dims)
    for k in range(dims):  # grid component k is array axis dims - 1 - k
        axis = dims - 1 - k
        base = (torch.arange(size[axis], device=theta.device, dtype=theta.dtype) * 2 + 1) / size[axis] - 1
        shape = [n] + [1] * dims + [dims]
        shape[1 + axis] = size[axis]
        grid = grid + (base[None, :, None] * theta[:, None, :, k]).reshape(shape)
    return grid


def _resample_seg(seg: Tensor, grid: Tensor, patch_size: tuple[int, ...], interpolation: str, border: int) -> Tensor:
    """Sample labels at ``grid``: nearest, or nnU-Net v2's linear one-hot + argmax; ``border`` outside."""
    if interpolation == "nearest":
        # float32 holds every label exactly (|label| < 2 ** 24); nearest sampling copies values, so
        # shifting by the border value makes the zero padding read as the border label
        values = seg.to(grid.dtype)
        if border:
            values -= border
        out = F.grid_sample(values, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if border:
            out += border
        return out.to(seg.dtype)
    labels = torch.unique(seg)
    n, channels = seg.shape[:2]
    spatial = seg.shape[2:]
    one_hot = (seg.unsqueeze(2) == labels.view(1, 1, -1, *[1] * len(spatial))).to(grid.dtype)
    sampled = F.grid_sample(
        one_hot.flatten(1, 2), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(n, channels, labels.numel(), *patch_size)
    outside = (1 - sampled.sum(2, keepdim=True)).clamp_min(0)
    values = torch.cat([labels, labels.new_tensor([border])])
    return values[torch.cat([sampled, outside], dim=2).argmax(2)].to(seg.dtype)
