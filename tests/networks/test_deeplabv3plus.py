"""DeepLabV3+: atrous encoder (the plan's strides and dilations are what is built), output stride, ASPP with
image pooling, low-level decoder, anisotropic patches, footprint tracing, and that it learns."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

import nnseg.networks
from nnseg.networks.deeplabv3plus import DeepLabV3Plus, ImagePooling, ResidualBlock, build_deeplabv3plus
from nnseg.networks.plans import DeepLabV3PlusPlan, UNetPlan
from nnseg.networks.trace import trace

ANISOTROPIC = DeepLabV3PlusPlan(
    n_stages=5,
    features_per_stage=(5, 10, 20, 40, 40),
    kernel_sizes=((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
    n_blocks_per_stage=(1, 2, 2, 1, 1),
    output_stride=8,
    aspp_rates=((1, 2, 2), (2, 4, 4), (3, 6, 6)),
    aspp_features=16,
    low_level_stage=2,
    low_level_features=6,
    decoder_features=12,
    deep_supervision=False,
)


def isotropic(dims: int, output_stride: int = 16) -> DeepLabV3PlusPlan:
    """Five stages at total strides 1, 2, 4, 8, 16 per axis."""
    return DeepLabV3PlusPlan(
        n_stages=5,
        features_per_stage=(4, 8, 16, 16, 16),
        kernel_sizes=((3,) * dims,) * 5,
        strides=((1,) * dims,) + ((2,) * dims,) * 4,
        n_blocks_per_stage=(1, 1, 2, 2, 2),
        output_stride=output_stride,
        aspp_rates=((2,) * dims, (3,) * dims),
        aspp_features=8,
        low_level_stage=2,
        low_level_features=4,
        decoder_features=8,
        deep_supervision=False,
    )


def convs(module: nn.Module) -> list[nn.Conv2d | nn.Conv3d]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]


@pytest.mark.parametrize(
    ("plan", "patch"),
    [(isotropic(2), (48, 32)), (isotropic(3), (32, 32, 16)), (ANISOTROPIC, (8, 64, 48))],
    ids=["2d", "3d", "3d-anisotropic"],
)
def test_output_shapes_and_deep_supervision(plan: DeepLabV3PlusPlan, patch: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *patch)
    net = build_deeplabv3plus(plan, 3, 5, deep_supervision=True).train()
    out = net(x)
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (2, 5, *patch)
    assert len(net.segmentation_heads()) == 1 and net.segmentation_heads()[0] is net.classifier
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 5, *patch)
    plain = build_deeplabv3plus(plan, 3, 5).train()  # the plan's flag: off
    assert plain(x).shape == (2, 5, *patch)


def test_the_plans_strides_and_dilations_are_built() -> None:
    """Every encoder convolution has the stage's applied stride (first block only) and dilation (per axis, 1 where
    the kernel is 1), padding dilation * (kernel // 2); the shortcut pools exactly where the stage strides."""
    plan = ANISOTROPIC
    schedule = plan.dilations()
    assert schedule[-1] == ((2, 1, 1), (1, 2, 2))  # the last stage skips its in-plane stride: atrous
    net = build_deeplabv3plus(plan, 1, 2)
    assert len(net.stages) == plan.n_stages
    for s, stage in enumerate(net.stages):
        applied, dilation = schedule[s]
        kernel = plan.kernel_sizes[s]
        expected_dilation = tuple(d if k > 1 else 1 for d, k in zip(dilation, kernel))
        blocks = list(stage)
        assert len(blocks) == plan.n_blocks_per_stage[s] and all(isinstance(b, ResidualBlock) for b in blocks)
        for b, block in enumerate(blocks):
            for conv in (block.conv1.conv, block.conv2.conv):
                assert conv.kernel_size == kernel and conv.dilation == expected_dilation
                assert conv.padding == tuple(d * (k // 2) for d, k in zip(expected_dilation, kernel))
            assert block.conv1.conv.stride == (applied if b == 0 else (1, 1, 1))
            assert block.conv2.conv.stride == (1, 1, 1)
            pools = [m for m in block.shortcut if isinstance(m, nn.AvgPool3d)]
            assert len(pools) == (1 if b == 0 and applied != (1, 1, 1) else 0)
    dilated = [c for c in convs(net.stages) if c.dilation != (1, 1, 1)]
    assert dilated and all(c.dilation == (1, 2, 2) for c in dilated)


@pytest.mark.parametrize(("output_stride", "bottleneck", "dilated_stages"), [(16, 2, 0), (8, 4, 1), (4, 8, 2)])
def test_output_stride_sets_the_bottleneck_resolution(output_stride: int, bottleneck: int, dilated_stages: int) -> None:
    plan = isotropic(3, output_stride)
    net = build_deeplabv3plus(plan, 1, 2).eval()
    seen: dict[str, torch.Size] = {}
    net.stages[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("bottleneck", o.shape))
    net.aspp.register_forward_hook(lambda m, i, o: seen.__setitem__("aspp", o.shape))
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    assert seen["bottleneck"][2:] == (bottleneck,) * 3 and seen["aspp"][2:] == (bottleneck,) * 3
    assert sum(any(c.dilation != (1, 1, 1) for c in convs(stage)) for stage in net.stages) == dilated_stages
    assert max(max(c.dilation) for c in convs(net.stages)) == 16 // output_stride  # the strides it skips


def test_aspp_branches_and_image_pooling() -> None:
    plan = ANISOTROPIC
    net = build_deeplabv3plus(plan, 1, 2)
    branches = list(net.aspp.branches)
    assert len(branches) == 2 + len(plan.aspp_rates)
    assert branches[0].conv.kernel_size == (1, 1, 1)
    for branch, rates in zip(branches[1:-1], plan.aspp_rates):  # 3x3 atrous branches at the plan's per-axis rates
        assert branch.conv.kernel_size == (3, 3, 3) and branch.conv.dilation == rates
        assert branch.conv.padding == rates
    pooling = branches[-1]
    assert isinstance(pooling, ImagePooling)
    assert not [m for m in pooling.modules() if isinstance(m, nn.InstanceNorm3d)]  # degenerate on a 1x1x1 map
    assert pooling.conv.conv.bias is not None
    assert all(c.out_channels == plan.aspp_features for b in branches for c in convs(b))
    assert net.aspp.project.conv.in_channels == (2 + len(plan.aspp_rates)) * plan.aspp_features
    # image pooling: one value per channel, broadcast over the whole map
    features = torch.randn(2, plan.features_per_stage[-1], 2, 8, 6)
    pooled = pooling(features)
    assert pooled.shape == (2, plan.aspp_features, 2, 8, 6)
    assert torch.equal(pooled, pooled[:, :, :1, :1, :1].expand_as(pooled))


def test_decoder_fuses_the_low_level_stage_at_its_resolution() -> None:
    plan = ANISOTROPIC
    net = build_deeplabv3plus(plan, 1, 2).eval()
    seen: dict[str, torch.Size] = {}
    net.stages[plan.low_level_stage].register_forward_hook(lambda m, i, o: seen.__setitem__("low", o.shape))
    net.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("decoder_in", i[0].shape))
    with torch.no_grad():
        net(torch.randn(1, 1, 8, 64, 48))
    assert seen["low"][2:] == (8, 16, 12)  # total stride (1, 4, 4)
    assert seen["decoder_in"] == (1, plan.aspp_features + plan.low_level_features, 8, 16, 12)
    assert net.low_level.conv.in_channels == plan.features_per_stage[plan.low_level_stage]
    assert all(c.kernel_size == (3, 3, 3) for c in convs(net.decoder))


def test_head_bias_adds_directly_to_the_logits() -> None:
    """The training recipe writes the log class prior into the head's bias: interpolation must keep it additive."""
    net = build_deeplabv3plus(isotropic(2), 1, 3).eval()
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        before = net(x)
        net.classifier.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
        after = net(x)
    torch.testing.assert_close(after - before, torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1).expand_as(after))


def test_trace_counts_the_real_parameters() -> None:
    for plan, patch in ((ANISOTROPIC, (8, 64, 48)), (isotropic(2, 8), (32, 32))):
        footprint = trace(plan, patch, 2, 3)
        net = build_deeplabv3plus(plan, 2, 3)
        assert footprint.parameters == sum(p.numel() for p in net.parameters())
        assert footprint.flops > 0 and footprint.feature_map_voxels > 0


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    net = build_deeplabv3plus(isotropic(2, 8), 1, 2).train()
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[0, 8:24, 8:24] = 1  # a square, and a half: learnable at the decoder's stride 4
    target[1, :, :16] = 1
    x = target[:, None].float() + 0.3 * torch.randn(2, 1, 32, 32)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


def test_create_builds_through_the_planning_rule() -> None:
    net = nnseg.networks.create(
        "deeplabv3plus", in_channels=1, classes=3, dims=3, patch_size=(32, 32, 32), base_features=8
    )
    assert isinstance(net, DeepLabV3Plus)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_plan_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="low_level_stage"):
        build_deeplabv3plus(replace(ANISOTROPIC, low_level_stage=5), 1, 2)
    with pytest.raises(ValueError, match="aspp_rates"):
        build_deeplabv3plus(replace(ANISOTROPIC, aspp_rates=((2, 2),)), 1, 2)
    unet = UNetPlan(
        n_stages=2,
        features_per_stage=(4, 8),
        kernel_sizes=((3, 3),) * 2,
        strides=((1, 1), (2, 2)),
        n_conv_per_stage=(2, 2),
        n_conv_per_stage_decoder=(2,),
    )
    with pytest.raises(TypeError, match="DeepLabV3PlusPlan"):
        build_deeplabv3plus(unet, 1, 2)
