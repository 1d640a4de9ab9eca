"""Network topology from spacing and patch size: pure functions, no I/O.

The rules are nnU-Net's (v2, ``get_pool_and_conv_props``), restated:

* An axis is pooled (stride 2) while its feature map stays at least
  ``2 * min_edge`` voxels and its current spacing is within 2x of the finest
  current spacing among the poolable axes. A lone poolable axis needs
  ``3 * min_edge`` voxels.
* A convolution kernel is 1 along an axis that is still 2x (or more) coarser than the
  finest axis, 3 otherwise; once 3, it stays 3. The bottleneck kernel is always 3.
* The patch is padded up to a multiple of ``2 ** n_pool`` per axis.

Sizes may be fractional (nnU-Net passes median shapes through unrounded); the
arithmetic below keeps them so, to reproduce nnU-Net's plans to the voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """Pooling and kernel layout of a U-Net for one patch size.

    Attributes:
        pool_per_axis: number of stride-2 downsamplings per axis.
        strides: per stage, per axis; stage 0 has stride 1.
        kernel_sizes: per stage, per axis (1 or 3).
        patch_size: the patch padded to a multiple of ``divisible_by``.
        divisible_by: ``2 ** pool_per_axis``.
    """

    pool_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_to_multiple(shape: Sequence[float], divisible_by: Sequence[int]) -> tuple[int, ...]:
    """Smallest multiple of ``divisible_by`` per axis that is >= shape (exact multiples stay)."""
    padded = []
    for size, divisor in zip(shape, divisible_by):
        remainder = size % divisor
        padded.append(int(size if remainder == 0 else size + divisor - remainder))
    return tuple(padded)


def pool_and_kernel_layout(
    spacing: Sequence[float], patch_size: Sequence[float], min_edge: int, max_pool_per_axis: int | None = None
) -> Topology:
    """Decide strides and kernels for ``patch_size`` at ``spacing`` (see the module docstring)."""
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    limit = math.inf if max_pool_per_axis is None else max_pool_per_axis
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    pool_per_axis = [0] * dims
    kernel = [1] * dims
    while True:
        poolable = [a for a in range(dims) if current_size[a] >= 2 * min_edge]
        if not poolable:
            break
        finest = min(current_spacing[a] for a in poolable)
        poolable = [a for a in poolable if current_spacing[a] / finest < 2 and pool_per_axis[a] < limit]
        if not poolable or (len(poolable) == 1 and current_size[poolable[0]] < 3 * min_edge):
            break
        finest_overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / finest_overall < 2 else 1 for a, k in enumerate(kernel)]
        stride = [1] * dims
        for axis in poolable:
            stride[axis] = 2
            pool_per_axis[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)
    divisible_by = tuple(2**p for p in pool_per_axis)
    return Topology(
        pool_per_axis=tuple(pool_per_axis),
        strides=tuple(strides),
        kernel_sizes=tuple(kernels),
        patch_size=pad_to_multiple(patch_size, divisible_by),
        divisible_by=divisible_by,
    )


def features_per_stage(n_stages: int, base: int, cap: int) -> tuple[int, ...]:
    """``base * 2**stage``, capped."""
    return tuple(min(cap, base * 2**stage) for stage in range(n_stages))


def _downsample(size: Sequence[int], stride: Sequence[int]) -> list[int]:
    return [s // t for s, t in zip(size, stride)]


def feature_map_voxels(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    features: Sequence[int],
    n_conv_encoder: Sequence[int],
    n_conv_decoder: Sequence[int],
    num_classes: int,
    *,
    deep_supervision: bool = False,
) -> int:
    """Sum of all conv / transposed-conv / head output sizes (channels x voxels) for one sample.

    This is the activation footprint nnU-Net's planner compares against its memory
    reference (``compute_conv_feature_map_size`` of PlainConvUNet, deep supervision off).
    """
    total = 0
    size = list(patch_size)
    for stage, stride in enumerate(strides):  # encoder: the first conv of a stage carries its stride
        size = _downsample(size, stride)
        total += n_conv_encoder[stage] * features[stage] * math.prod(size)
    skip_sizes = []
    size = list(patch_size)
    for stride in strides[:-1]:
        size = _downsample(size, stride)
        skip_sizes.append(size)
    n_decoder = len(strides) - 1
    for step in range(n_decoder):  # decoder: from the bottleneck up
        stage = n_decoder - 1 - step
        voxels = math.prod(skip_sizes[stage])
        total += n_conv_decoder[step] * features[stage] * voxels  # conv blocks
        total += features[stage] * voxels  # transposed conv
        if deep_supervision or step == n_decoder - 1:
            total += num_classes * voxels
    return total


def conv_flops(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    kernel_sizes: Sequence[Sequence[int]],
    features: Sequence[int],
    n_conv_encoder: Sequence[int],
    n_conv_decoder: Sequence[int],
    in_channels: int,
    num_classes: int,
) -> float:
    """Multiply-add FLOPs (x2) of one forward pass of the plain U-Net for one sample."""
    flops = 0.0
    size = list(patch_size)
    channels = in_channels
    stage_sizes = []
    for stage, stride in enumerate(strides):
        size = _downsample(size, stride)
        stage_sizes.append(size)
        kernel = math.prod(kernel_sizes[stage])
        for _ in range(n_conv_encoder[stage]):
            flops += 2.0 * kernel * channels * features[stage] * math.prod(size)
            channels = features[stage]
    n_decoder = len(strides) - 1
    for step in range(n_decoder):
        stage = n_decoder - 1 - step
        voxels = math.prod(stage_sizes[stage])
        flops += 2.0 * features[stage + 1] * features[stage] * voxels  # transposed, kernel = stride: 1 MAC/output
        kernel = math.prod(kernel_sizes[stage])
        channels = 2 * features[stage]
        for _ in range(n_conv_decoder[step]):
            flops += 2.0 * kernel * channels * features[stage] * voxels
            channels = features[stage]
    flops += 2.0 * features[0] * num_classes * math.prod(stage_sizes[0])
    return flops
