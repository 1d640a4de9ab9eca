"""The U-Net built from a plan: nnU-Net's PlainConvUNet topology (parameter count) and output shapes."""

from __future__ import annotations

import pytest
import torch

from nnseg.networks import build_network
from nnseg.networks.footprint import unet_parameters
from nnseg.networks.plans import UNetPlan
from nnseg.planning import load_preset
from nnseg.planning.planner import fit_patch_to_budget


def _plan(spacing, median_shape) -> UNetPlan:
    preset = load_preset("default")
    network = fit_patch_to_budget(spacing, median_shape, preset, 1, 3).network
    assert isinstance(network, UNetPlan)
    return network


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
    # nnU-Net's PlainConvUNet builds a segmentation head per decoder stage, deep supervision or not. Checked against
    # dynamic_network_architectures' PlainConvUNet (nnU-Net v2.8.1): 31,196,399 for the 6-stage 128^3 plan, exactly.
    theirs = unet_parameters(plan, 1, 3, deep_supervision=True, conv_bias=True)
    if reference is not None:
        assert theirs == reference
    assert abs(ours - theirs) / theirs < 0.01


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_shapes_and_deep_supervision(dims: int) -> None:
    patch = (32, 32, 32)[-dims:]
    plan = _plan((1.0,) * dims, patch)
    plan = UNetPlan(
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


def test_an_unknown_architecture_lists_the_choices() -> None:
    plan = UNetPlan(
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
