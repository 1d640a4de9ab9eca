"""The residual-encoder U-Net: nnU-Net's ResidualEncoderUNet (footprint, parameters, outputs), ResNet-D blocks,
deep supervision, meta-device trace."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nnseg.networks
from nnseg.networks.footprint import resenc_footprint
from nnseg.networks.plans import RESENC_BLOCKS_PER_STAGE, ResEncUNetPlan
from nnseg.networks.resenc_unet import ResidualBlock, build_resenc_unet
from nnseg.networks.trace import trace


def _plan(features, kernels, strides, **fields) -> ResEncUNetPlan:
    n = len(features)
    return ResEncUNetPlan(
        n_stages=n,
        features_per_stage=tuple(features),
        kernel_sizes=tuple(tuple(k) for k in kernels),
        strides=tuple(tuple(s) for s in strides),
        n_blocks_per_stage=fields.pop("n_blocks_per_stage", RESENC_BLOCKS_PER_STAGE[:n]),
        n_conv_per_stage_decoder=fields.pop("n_conv_per_stage_decoder", (1,) * (n - 1)),
        **fields,
    )


ISO_3D = _plan((32, 64, 128, 256, 320, 320), [(3, 3, 3)] * 6, [(1, 1, 1)] + [(2, 2, 2)] * 5)
ANISO_3D = _plan(
    (32, 64, 128, 256, 320, 320),
    [(1, 3, 3)] + [(3, 3, 3)] * 5,
    [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)],
)
PLAN_2D = _plan((32, 64, 128, 256, 512, 512, 512), [(3, 3)] * 7, [(1, 1)] + [(2, 2)] * 6)
SMALL_3D = _plan((5, 10, 20, 40), [(1, 3, 3)] + [(3, 3, 3)] * 3, [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)])
TINY_3D = _plan((3, 6, 12, 12), [(1, 3, 3)] + [(3, 3, 3)] * 3, [(1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 2, 2)])

# nnU-Net's own numbers, obtained with nnunetv2 2.8.1 / dynamic_network_architectures in a separate venv:
# ResidualEncoderUNet(input_channels, n_stages, features, Conv3d/2d, kernels, strides, n_blocks_per_stage=
# (1, 3, 4, 6, 6, 6, 6)[:n], num_classes, n_conv_per_stage_decoder=(1,) * (n - 1), conv_bias=True, InstanceNorm
# {eps 1e-5, affine}, LeakyReLU {inplace}) as the ResEnc planners build it (deep_supervision False), on the meta
# device: sum(p.numel()) (it always builds a segmentation layer per decoder stage), the parameters of the
# seg_layers other than the last (unused without deep supervision), compute_conv_feature_map_size(patch), and
# FlopCounterMode's total for one eval forward of a (1, in_channels, *patch) tensor.
# (plan, patch, in_channels, classes, params, unused seg-layer params, feature map, flops)
NNUNET_REFERENCE = {
    "3d_128_iso": (ISO_3D, (128, 128, 128), 1, 3, 102_350_575, 2_316, 557_420_544, 1_434_940_604_416),
    "3d_aniso": (ANISO_3D, (40, 224, 192), 1, 3, 101_858_479, 2_316, 634_542_720, 1_714_656_706_560),
    "2d_512": (PLAN_2D, (512, 512), 1, 3, 105_918_322, 4_431, 129_531_904, 258_704_670_720),
    "3d_small": (SMALL_3D, (8, 32, 24), 3, 5, 632_550, 160, 377_280, 140_282_880),
}


@pytest.mark.parametrize("name", list(NNUNET_REFERENCE))
def test_footprint_equals_nnunet(name: str) -> None:
    plan, patch, in_channels, classes, params, unused, feature_map, flops = NNUNET_REFERENCE[name]
    ours = resenc_footprint(plan, patch, in_channels, classes)
    assert ours.feature_map_voxels == feature_map  # exact: the planner compares it with nnU-Net's references
    assert ours.flops == flops
    # we build only the heads in use: exactly nnU-Net's network minus its unused deep-supervision layers
    assert ours.parameters == params - unused
    assert abs(ours.parameters - params) / params < 0.01


@pytest.mark.parametrize("name", ["3d_aniso", "2d_512", "3d_small"])
def test_trace_agrees_with_closed_form(name: str) -> None:
    plan, patch, in_channels, classes, *_ = NNUNET_REFERENCE[name]
    closed = resenc_footprint(plan, patch, in_channels, classes)
    traced = trace(plan, patch, in_channels, classes)
    assert traced.parameters == closed.parameters
    assert abs(traced.flops - closed.flops) / closed.flops < 0.02
    # the blocks report the pooled-only shortcut nnU-Net counts, so even the memory measure agrees
    assert traced.feature_map_voxels == closed.feature_map_voxels


def test_parameters_of_the_built_network() -> None:
    for deep_supervision in (False, True):
        network = build_resenc_unet(SMALL_3D, 3, 5, deep_supervision=deep_supervision)
        counted = sum(p.numel() for p in network.parameters())
        extra = (10 + 1) * 5 if deep_supervision else 0  # the second head (stage 1, 10 features)
        assert counted == resenc_footprint(SMALL_3D, (8, 32, 24), 3, 5).parameters + extra


def _nnunet_order(network: nn.Module) -> list[nn.Parameter]:
    """Our parameters in the order of nnU-Net's named_parameters (its decoder lists convs before transposed convs)."""
    modules = [network.stem, network.encoder, network.decoder, network.upsamples, network.heads]
    return [p for module in modules for p in module.parameters()]


def test_output_equals_nnunet_for_the_same_weights() -> None:
    """Reference: nnU-Net's ResidualEncoderUNet for SMALL_3D (3 -> 5 classes, float64, eval), every parameter p_i
    (its named_parameters order without seg_layers 0 and 1) set to 0.3 sin(0.37 k + i) (k: flat index), input
    sin(0.01 k) of shape (1, 3, 8, 32, 24): output sum, sum of |.|, and every 4001st value."""
    network = build_resenc_unet(SMALL_3D, 3, 5, deep_supervision=False).double().eval()
    params = _nnunet_order(network)
    assert len(params) == 145
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(0.3 * torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.37 + i).reshape(p.shape))
        x = torch.sin(torch.arange(3 * 8 * 32 * 24, dtype=torch.float64) * 0.01).reshape(1, 3, 8, 32, 24)
        y = network(x)
    assert y.sum().item() == pytest.approx(1854.5724678214817, rel=1e-9)
    assert y.abs().sum().item() == pytest.approx(4064.7937246157107, rel=1e-9)
    expected = [-0.1456996093, -0.1447367141, -0.0461096809, -0.0457294793, 0.0664470252, 0.128157446, 0.1628925717]
    assert y.flatten()[::4001][:7].tolist() == pytest.approx(expected, abs=1e-9)


def test_residual_blocks_follow_resnet_d() -> None:
    network = build_resenc_unet(SMALL_3D, 3, 5)
    blocks = [[b for b in stage if isinstance(b, ResidualBlock)] for stage in network.encoder]
    assert [len(stage) for stage in blocks] == [1, 3, 4, 6]
    assert network.stem.conv.stride == (1, 1, 1) and network.stem.conv.kernel_size == (1, 3, 3)
    # stage 0: stem already has its features, no stride -> identity shortcut
    assert len(blocks[0][0].shortcut) == 0
    for s in (1, 2, 3):
        first = blocks[s][0]
        assert first.conv1.conv.stride == SMALL_3D.strides[s]
        pool, projection = first.shortcut
        assert isinstance(pool, nn.AvgPool3d) and tuple(pool.kernel_size) == SMALL_3D.strides[s]
        assert projection.conv.kernel_size == (1, 1, 1) and projection.conv.bias is None
        assert all(len(b.shortcut) == 0 and b.conv1.conv.stride == (1, 1, 1) for b in blocks[s][1:])
    for stage in blocks:  # the last norm of each block starts at zero: the block starts as its shortcut
        for block in stage:
            assert not block.conv2.adn.N.weight.any() and not block.conv2.adn.N.bias.any()
            assert not any(isinstance(m, nn.LeakyReLU) for m in block.conv2.modules())
    # a strided stage without a channel change only pools its shortcut (ISO_3D's last stage: 320 -> 320)
    with torch.device("meta"):
        last = build_resenc_unet(ISO_3D, 1, 3).encoder[-1][0]
    assert [type(m) for m in last.shortcut] == [nn.AvgPool3d] and last.pooled_shortcut_only
    # one decoder conv per stage (ResEnc presets), the first reading the concatenation
    assert [len(d) for d in network.decoder] == [1, 1, 1]
    assert [d[0].conv.in_channels for d in network.decoder] == [40, 20, 10]


@pytest.mark.parametrize(
    ("plan", "patch"),
    [(TINY_3D, (4, 16, 24)), (_plan((4, 8, 16, 24), [(3, 3)] * 4, [(1, 1)] + [(2, 2)] * 3), (16, 24))],
    ids=["3d_anisotropic", "2d"],
)
def test_shapes_and_deep_supervision(plan: ResEncUNetPlan, patch: tuple[int, ...]) -> None:
    network = build_resenc_unet(plan, 3, 5)
    x = torch.randn(2, 3, *patch)
    outputs = network.train()(x)
    heads = network.segmentation_heads()
    assert isinstance(outputs, list) and len(outputs) == len(heads) == plan.n_stages - 2
    size = list(patch)
    for stage, (out, head) in enumerate(zip(outputs, heads)):
        size = [e // s for e, s in zip(size, plan.strides[stage])]
        assert out.shape == (2, 5, *size)  # each head at its own decoder level, highest first
        assert head.out_channels == 5 and head.bias is not None and head.bias.shape == (5,)
    with torch.no_grad():
        assert network.eval()(x).shape == (2, 5, *patch)
    single = build_resenc_unet(plan, 3, 5, deep_supervision=False).train()
    assert single(x).shape == (2, 5, *patch) and len(single.segmentation_heads()) == 1


def test_head_bias_adds_to_logits() -> None:
    network = build_resenc_unet(TINY_3D, 3, 5, deep_supervision=False).eval()
    x = torch.randn(1, 3, 4, 16, 24)
    with torch.no_grad():
        before = network(x)
        network.segmentation_heads()[0].bias += torch.arange(5.0)
        after = network(x)
    assert torch.allclose(after - before, torch.arange(5.0).view(1, 5, 1, 1, 1).expand_as(before), atol=1e-5)


def test_training_reduces_the_loss() -> None:
    torch.manual_seed(0)
    network = build_resenc_unet(TINY_3D, 3, 5, deep_supervision=True).train()
    x = torch.randn(2, 3, 4, 16, 16)
    target = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        outputs = network(x)
        loss = sum(
            0.5**i
            * nn.functional.cross_entropy(
                out, nn.functional.interpolate(target[:, None].float(), out.shape[2:])[:, 0].long()
            )
            for i, out in enumerate(outputs)
        )
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


def test_create_and_plan_errors() -> None:
    network = nnseg.networks.create(
        "resenc_unet", in_channels=1, classes=3, dims=3, patch_size=(32, 32, 32), base_features=8
    )
    with torch.no_grad():
        assert network.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    assert math.prod(network.heads[0].weight.shape) == 8 * 3
    with pytest.raises(ValueError, match="n_stages"):
        build_resenc_unet(_plan((8,), [(3, 3, 3)], [(1, 1, 1)]), 1, 2)
    with pytest.raises(ValueError, match="n_conv_per_stage_decoder"):
        build_resenc_unet(
            _plan((8, 16), [(3, 3, 3)] * 2, [(1, 1, 1), (2, 2, 2)], n_conv_per_stage_decoder=(1, 1)), 1, 2
        )
