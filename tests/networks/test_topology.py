"""Topology rules: pooling, kernels, padding and the feature-map footprint."""

from __future__ import annotations

import math

import pytest

from nnseg.networks.topology import (
    conv_flops,
    feature_map_voxels,
    features_per_stage,
    pad_to_multiple,
    pool_and_kernel_layout,
)


def test_isotropic_patch_pools_every_axis_until_the_min_edge() -> None:
    topology = pool_and_kernel_layout((1.0, 1.0, 1.0), (128, 128, 128), 4)
    assert topology.n_stages == 6
    assert topology.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert topology.kernel_sizes == ((3, 3, 3),) * 6
    assert topology.patch_size == (128, 128, 128)
    assert topology.divisible_by == (32, 32, 32)


def test_patch_is_padded_after_clipping() -> None:
    """A patch clipped to a median shape of (30, 44, 33) is padded up to the pooling multiple."""
    topology = pool_and_kernel_layout((1.0, 1.0, 1.0), (30, 44, 33), 4)
    assert topology.patch_size == (32, 48, 40)
    assert topology.pool_per_axis == (3, 3, 3)  # 30 -> 15 -> 8 -> 4


def test_anisotropic_axis_gets_kernel_1_and_pools_late() -> None:
    topology = pool_and_kernel_layout((3.0, 0.8, 0.8), (40, 192, 192), 4)
    assert topology.kernel_sizes[0] == (1, 3, 3)
    assert topology.strides[1] == (1, 2, 2)  # the coarse axis waits until in-plane spacing catches up
    assert topology.kernel_sizes[-1] == (3, 3, 3)
    assert topology.strides[-1][0] in (1, 2)


def test_lone_axis_needs_three_times_the_min_edge() -> None:
    topology = pool_and_kernel_layout((1.0,), (11,), 4)
    assert topology.pool_per_axis == (0,)
    topology = pool_and_kernel_layout((1.0,), (12,), 4)
    assert topology.pool_per_axis == (1,)


def test_max_pool_per_axis_caps_stages() -> None:
    assert pool_and_kernel_layout((1.0, 1.0, 1.0), (256, 256, 256), 4, max_pool_per_axis=4).n_stages == 5


@pytest.mark.parametrize(("shape", "divisor", "expected"), [((32, 33), (16, 16), (32, 48)), ((45.5,), (8,), (48,))])
def test_pad_to_multiple(shape, divisor, expected) -> None:
    assert pad_to_multiple(shape, divisor) == expected


def test_features_double_and_cap() -> None:
    assert features_per_stage(7, 32, 320) == (32, 64, 128, 256, 320, 320, 320)


def test_feature_map_footprint_by_hand() -> None:
    """Two stages, patch 8^3: encoder 2x32x512 + 2x64x64; decoder 2x32x512 + transposed 32x512 + head 3x512."""
    strides = ((1, 1, 1), (2, 2, 2))
    total = feature_map_voxels((8, 8, 8), strides, (32, 64), (2, 2), (2,), 3)
    assert total == 2 * 32 * 512 + 2 * 64 * 64 + 2 * 32 * 512 + 32 * 512 + 3 * 512


def test_conv_flops_by_hand() -> None:
    strides = ((1, 1, 1), (2, 2, 2))
    kernels = ((3, 3, 3), (3, 3, 3))
    flops = conv_flops((8, 8, 8), strides, kernels, (4, 8), (2, 2), (2,), 1, 2)
    encoder = 2 * 27 * (1 * 4 + 4 * 4) * 512 + 2 * 27 * (4 * 8 + 8 * 8) * 64
    transposed = 2 * 8 * 4 * 512  # kernel = stride: each output voxel gets one tap (64 inputs x 8 taps = 512)
    decoder = 2 * 27 * (8 * 4 + 4 * 4) * 512
    head = 2 * 4 * 2 * 512
    assert math.isclose(flops, encoder + transposed + decoder + head)
