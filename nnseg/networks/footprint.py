"""What a network costs for one patch: activation footprint (memory), forward FLOPs (time), parameters.

The planner fits patch and batch to a preset's budget with these numbers, *for the architecture it plans*.
The plain U-Net's and the residual-encoder U-Net's are closed forms equal to nnU-Net's
(``compute_conv_feature_map_size`` of PlainConvUNet / ResidualEncoderUNet), so those plans stay nnU-Net's to the
voxel, and computing them needs no torch. Every other architecture is measured by
a trace (:func:`nnseg.networks.trace.trace`: one forward pass on torch's meta device, which allocates nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nnseg.networks.plans import ResEncUNetPlan, UNetPlan
from nnseg.networks.topology import conv_flops, feature_map_voxels


@dataclass(frozen=True)
class Footprint:
    """Per sample, for one forward pass at a patch (deep supervision off).

    Attributes:
        feature_map_voxels: elements of every convolution / linear / attention output: nnU-Net's memory measure.
        flops: forward floating-point operations (2 per multiply-add).
        parameters: trainable parameters.
    """

    feature_map_voxels: float
    flops: float
    parameters: int


def unet_parameters(
    plan: UNetPlan, in_channels: int, num_classes: int, *, deep_supervision: bool = False, conv_bias: bool = False
) -> int:
    """Parameters of the plain U-Net, counted from its definition: nnseg's (MONAI's convolution blocks carry no
    bias before the instance norm, where it is redundant), or nnU-Net's PlainConvUNet with ``conv_bias=True``."""
    total, channels = 0, in_channels
    for stage, features in enumerate(plan.features_per_stage):
        kernel = math.prod(plan.kernel_sizes[stage])
        for _ in range(plan.n_conv_per_stage[stage]):
            total += kernel * channels * features + features * conv_bias + 2 * features  # conv, instance norm
            channels = features
    n = plan.n_stages
    for step in range(n - 1):
        stage = n - 2 - step
        features = plan.features_per_stage[stage]
        total += math.prod(plan.strides[stage + 1]) * plan.features_per_stage[stage + 1] * features
        total += features * plan.conv_bias  # transposed convolution's bias
        kernel, channels = math.prod(plan.kernel_sizes[stage]), 2 * features
        for _ in range(plan.n_conv_per_stage_decoder[step]):
            total += kernel * channels * features + features * conv_bias + 2 * features
            channels = features
        if deep_supervision or step == n - 2:
            total += features * num_classes + num_classes  # segmentation head
    return total


def unet_footprint(plan: UNetPlan, patch_size: Sequence[int], in_channels: int, num_classes: int) -> Footprint:
    """The plain U-Net's footprint in closed form (nnU-Net's planner measure)."""
    voxels = feature_map_voxels(
        patch_size,
        plan.strides,
        plan.features_per_stage,
        plan.n_conv_per_stage,
        plan.n_conv_per_stage_decoder,
        num_classes,
    )
    flops = conv_flops(
        patch_size,
        plan.strides,
        plan.kernel_sizes,
        plan.features_per_stage,
        plan.n_conv_per_stage,
        plan.n_conv_per_stage_decoder,
        in_channels,
        num_classes,
    )
    return Footprint(float(voxels), flops, unet_parameters(plan, in_channels, num_classes))


def resenc_footprint(plan: ResEncUNetPlan, patch_size: Sequence[int], in_channels: int, num_classes: int) -> Footprint:
    """Feature-map elements (nnU-Net's ``compute_conv_feature_map_size``), forward FLOPs and parameters of the
    network with deep supervision off, in closed form (no torch)."""
    if plan.n_stages < 2:
        raise ValueError(f"n_stages must be >= 2 for resenc_unet, got {plan.n_stages}")
    features, n, bias = plan.features_per_stage, plan.n_stages, int(plan.conv_bias)
    voxels = flops = 0
    params = 0
    size = list(patch_size)
    kernel = math.prod(plan.kernel_sizes[0])
    voxels += features[0] * math.prod(size)  # stem
    flops += 2 * kernel * in_channels * features[0] * math.prod(size)
    params += kernel * in_channels * features[0] + (bias + 2) * features[0]
    channels = features[0]
    stage_sizes = []
    for s in range(n):
        kernel, f = math.prod(plan.kernel_sizes[s]), features[s]
        strided = any(st != 1 for st in plan.strides[s])
        size = [edge // st for edge, st in zip(size, plan.strides[s])]
        stage_sizes.append(math.prod(size))
        out = f * stage_sizes[-1]
        for b in range(plan.n_blocks_per_stage[s]):
            voxels += 2 * out  # conv1, conv2
            flops += 2 * kernel * (channels + f) * out
            params += kernel * (channels + f) * f + 2 * (bias + 2) * f
            if b == 0 and (strided or channels != f):
                voxels += out  # nnU-Net counts the shortcut's output, pooled or projected
            if channels != f:
                flops += 2 * channels * out
                params += channels * f + 2 * f  # 1x1 projection (no bias) + norm
            channels = f
    for step in range(n - 1):
        stage = n - 2 - step
        f, vox = features[stage], stage_sizes[stage]
        kernel = math.prod(plan.kernel_sizes[stage])
        up = math.prod(plan.strides[stage + 1]) * features[stage + 1] * f
        voxels += f * vox  # transposed conv
        flops += 2 * features[stage + 1] * f * vox  # input voxels x kernel voxels = vox
        params += up + bias * f
        channels = 2 * f
        for _ in range(plan.n_conv_per_stage_decoder[step]):
            voxels += f * vox
            flops += 2 * kernel * channels * f * vox
            params += kernel * channels * f + (bias + 2) * f
            channels = f
    voxels += num_classes * stage_sizes[0]  # the full-resolution head
    flops += 2 * features[0] * num_classes * stage_sizes[0]
    params += (features[0] + 1) * num_classes
    return Footprint(float(voxels), float(flops), params)


#: closed forms by plan class (nnU-Net's own measures, so these plans equal nnU-Net's); others are measured
CLOSED_FORMS: dict[type, Callable[..., Footprint]] = {UNetPlan: unet_footprint, ResEncUNetPlan: resenc_footprint}
