"""The U-Net built from a plan: nnU-Net's PlainConvUNet topology (parameter count) and output shapes."""

from __future__ import annotations

import math

import pytest
import torch

from nnseg.networks import available_architectures, build_network
from nnseg.planning import load_preset
from nnseg.planning.plan import NetworkPlan
from nnseg.planning.planner import fit_patch_to_budget


def plain_conv_unet_parameters(plan: NetworkPlan, in_channels: int, num_classes: int) -> int:
    """Parameters of nnU-Net's PlainConvUNet for this plan, counted from its definition.

    Checked against dynamic_network_architectures' PlainConvUNet (nnU-Net v2.8.1): 31,196,399 for the
    6-stage 128^3 plan below and 20,620,079 for its 7-stage 2D plan, exactly.
    """
    total, channels = 0, in_channels
    for stage, features in enumerate(plan.features_per_stage):
        kernel = math.prod(plan.kernel_sizes[stage])
        for _ in range(plan.n_conv_per_stage[stage]):
            total += kernel * channels * features + features + 2 * features  # conv + bias + instance norm
            channels = features
    n = plan.n_stages
    for step in range(n - 1):
        stage = n - 2 - step
        features = plan.features_per_stage[stage]
        total += math.prod(plan.strides[stage + 1]) * plan.features_per_stage[stage + 1] * features + features
        kernel, channels = math.prod(plan.kernel_sizes[stage]), 2 * features
        for _ in range(plan.n_conv_per_stage_decoder[step]):
            total += kernel * channels * features + features + 2 * features
            channels = features
        total += features * num_classes + num_classes  # a segmentation head per decoder stage
    return total


def _plan(spacing, median_shape) -> NetworkPlan:
    preset = load_preset("default")
    candidate = fit_patch_to_budget(spacing, median_shape, preset, 1, 3)
    topology = candidate.topology
    n = topology.n_stages
    return NetworkPlan(
        n_stages=n,
        features_per_stage=candidate.features,
        kernel_sizes=topology.kernel_sizes,
        strides=topology.strides,
        n_conv_per_stage=(2,) * n,
        n_conv_per_stage_decoder=(2,) * (n - 1),
    )


@pytest.mark.parametrize(
    ("spacing", "median_shape", "reference"),
    [
        ((1.0, 1.0, 1.0), (200, 200, 200), 31_196_399),
        ((1.0, 1.0), (512, 512), None),
        ((3.5, 0.8, 0.8), (40, 256, 256), None),
    ],
)
def test_parameter_count_within_one_percent_of_plain_conv_unet(spacing, median_shape, reference) -> None:
    plan = _plan(spacing, median_shape)
    ours = sum(p.numel() for p in build_network(plan, 1, 3).parameters())
    theirs = plain_conv_unet_parameters(plan, 1, 3)
    if reference is not None:
        assert theirs == reference
    assert abs(ours - theirs) / theirs < 0.01


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_shapes_and_deep_supervision(dims: int) -> None:
    patch = (32, 32, 32)[-dims:]
    plan = _plan((1.0,) * dims, patch)
    plan = NetworkPlan(
        n_stages=plan.n_stages,
        features_per_stage=(4, 8, 16, 32)[: plan.n_stages],
        kernel_sizes=plan.kernel_sizes,
        strides=plan.strides,
        n_conv_per_stage=plan.n_conv_per_stage,
        n_conv_per_stage_decoder=plan.n_conv_per_stage_decoder,
    )
    net = build_network(plan, 2, 3)
    x = torch.randn(2, 2, *patch)
    net.train()
    out = net(x)
    assert plan.n_stages == 4
    assert isinstance(out, list) and len(out) == plan.n_stages - 2  # the lowest decoder level has no head
    for level, head in enumerate(out):
        assert head.shape == (2, 3, *[p // 2**level for p in patch])
    net.eval()
    assert net(x).shape == (2, 3, *patch)


@pytest.mark.parametrize("architecture", available_architectures())
@pytest.mark.parametrize(
    "dims, kernels, strides, patch",
    [
        (3, ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), (8, 32, 24)),
        (2, ((3, 3),) * 4, ((1, 1), (2, 2), (2, 2), (2, 2)), (24, 40)),
    ],
)
def test_every_registered_architecture_keeps_the_network_contract(
    architecture: str, dims: int, kernels, strides, patch
) -> None:
    """Training: full-resolution logits first (deep-supervision heads after); eval: one tensor; backward runs;
    the plan's kernels, strides and widths are what gets built (anisotropic first kernel, odd channel counts)."""
    plan = NetworkPlan(
        n_stages=4,
        features_per_stage=(5, 10, 20, 40),
        kernel_sizes=kernels,
        strides=strides,
        n_conv_per_stage=(2,) * 4,
        n_conv_per_stage_decoder=(2,) * 3,
        architecture=architecture,
    )
    torch.manual_seed(0)
    net = build_network(plan, 3, 5)
    x = torch.randn(2, 3, *patch)
    net.train()
    out = net(x)
    heads = out if isinstance(out, list) else [out]
    full = heads[0]
    assert full.shape == (2, 5, *patch)
    scale = [1] * dims
    for stage, head in enumerate(heads):  # highest resolution first, each at its decoder level's size
        scale = [s * f for s, f in zip(scale, strides[stage])]
        assert head.shape == (2, 5, *[p // s for p, s in zip(patch, scale)])
    # segmentation_heads() names exactly the convolutions that produce the logits (one per output, one bias per class)
    named = net.segmentation_heads()
    assert len(named) == len(heads) and all(h.out_channels == 5 and h.bias.shape == (5,) for h in named)
    sum(head.square().mean() for head in heads).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():
        single = net(x)
    assert single.shape == (2, 5, *patch)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert tuple(convs[0].kernel_size) == kernels[0] and convs[0].in_channels == 3
    assert {c.out_channels for c in convs} >= {5, 10, 20, 40}


def test_an_unknown_architecture_lists_the_choices() -> None:
    plan = NetworkPlan(
        n_stages=2,
        features_per_stage=(4, 8),
        kernel_sizes=((3, 3),) * 2,
        strides=((1, 1), (2, 2)),
        n_conv_per_stage=(2, 2),
        n_conv_per_stage_decoder=(2,),
    )
    object.__setattr__(plan, "architecture", "segformer9000")
    with pytest.raises(KeyError, match="segformer9000.*available.*unet"):
        build_network(plan, 1, 2)
