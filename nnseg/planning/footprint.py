"""What a network costs for one patch: activation footprint (memory), forward FLOPs (time), parameters.

The planner fits patch and batch to a preset's budget with these numbers, *for the architecture it plans*.
The plain U-Net's are closed forms equal to nnU-Net's (``compute_conv_feature_map_size`` of PlainConvUNet),
so the default plans stay nnU-Net's to the voxel, and computing them needs no torch. Every other architecture
is measured by :func:`nnseg.networks.footprint.measure` (its own closed form where one exists, else one forward
pass on torch's meta device, which allocates nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnseg.planning.network_plans import NetworkPlan, UNetPlan
from nnseg.planning.topology import conv_flops, feature_map_voxels


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
        total += math.prod(plan.strides[stage + 1]) * plan.features_per_stage[stage + 1] * features + features
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


def estimate_footprint(plan: NetworkPlan, patch_size: Sequence[int], in_channels: int, num_classes: int) -> Footprint:
    """The footprint of ``plan`` at ``patch_size`` (closed form for the plain U-Net, else measured with torch)."""
    if isinstance(plan, UNetPlan):
        return unet_footprint(plan, patch_size, in_channels, num_classes)
    from nnseg.networks.footprint import measure

    return measure(plan, patch_size, in_channels, num_classes)
