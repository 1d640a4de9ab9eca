"""FCN-8s: score layers on three depths fused coarse to fine by bilinear-initialised learned upsampling."""

from __future__ import annotations

import math

import pytest
import torch

import nnseg.networks
from nnseg.networks import build_network
from nnseg.networks.fcn import FCN, upsampling_geometry
from nnseg.networks.plans import FCNPlan
from nnseg.networks.trace import trace


def _plan(dims: int = 3, **fields) -> FCNPlan:
    if dims == 3:
        topology = dict(
            kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
            strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
        )
    else:
        topology = dict(kernel_sizes=((3, 3),) * 4, strides=((1, 1), (2, 2), (2, 2), (2, 2)))
    defaults = dict(
        n_stages=4, features_per_stage=(5, 10, 20, 40), n_conv_per_stage=(2,) * 4, score_stages=(1, 2, 3), **topology
    )
    return FCNPlan(**{**defaults, **fields})


@pytest.mark.parametrize(("dims", "patch"), [(3, (8, 32, 24)), (2, (24, 40))])
def test_one_full_resolution_output_in_training_and_eval_even_with_deep_supervision(dims: int, patch) -> None:
    net = build_network(_plan(dims), 3, 5, deep_supervision=True)
    x = torch.randn(2, 3, *patch)
    out = net.train()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, *patch)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 5, *patch)
    assert len(net.segmentation_heads()) == 1


def test_score_layers_and_upsampling_follow_the_score_stages_per_axis() -> None:
    plan = _plan(n_conv_per_stage=(1, 2, 3, 1))
    net = build_network(plan, 3, 5)
    assert [len(block) for block in net.encoder] == [1, 2, 3, 1]
    assert [tuple(block[0].conv.stride) for block in net.encoder] == list(plan.strides)
    assert [score.in_channels for score in net.scores] == [10, 20, 40]
    assert all(s.out_channels == 5 and tuple(s.kernel_size) == (1, 1, 1) for s in net.scores)
    # score stages 1, 2, 3 are at total strides (1,2,2), (2,4,4), (4,8,8): fuse by 2 twice, then up by (1, 2, 2)
    assert [tuple(up.stride) for up in net.fuse_ups] == [(2, 2, 2), (2, 2, 2)]
    assert [tuple(up.kernel_size) for up in net.fuse_ups] == [(4, 4, 4), (4, 4, 4)]
    assert all(up.bias is None for up in net.fuse_ups)
    assert tuple(net.final_up.stride) == (1, 2, 2) and tuple(net.final_up.kernel_size) == (1, 4, 4)
    assert net.segmentation_heads() == [net.final_up]


def test_without_final_upsampling_the_finest_score_layer_is_the_head() -> None:
    net = build_network(_plan(score_stages=(0, 2, 3)), 1, 3)  # stage 0 has stride 1: nothing to upsample
    assert net.final_up is None and net.segmentation_heads() == [net.scores[0]]
    assert tuple(net.fuse_ups[0].stride) == (2, 4, 4)  # stages 0 -> 2 skip a stage: strides multiply
    assert net(torch.randn(1, 1, 8, 32, 24)).shape == (1, 3, 8, 32, 24)


@pytest.mark.parametrize("score_stages", [(1, 2, 3), (0, 2, 3)])
def test_the_head_bias_alone_sets_the_initial_output(score_stages) -> None:
    """Score layers start at zero (the paper), so the logits start at the head's bias: the class prior."""
    net = build_network(_plan(score_stages=score_stages), 1, 3)
    prior = torch.tensor([-1.0, 0.5, 0.5])
    with torch.no_grad():
        net.segmentation_heads()[0].bias.copy_(prior)
        out = net.eval()(torch.randn(2, 1, 8, 32, 24))
    torch.testing.assert_close(out, prior.view(1, 3, 1, 1, 1).expand_as(out))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
def test_upsampling_is_exactly_the_factor_and_starts_bilinear(factor: int) -> None:
    kernel, padding = upsampling_geometry((factor,))
    up = torch.nn.ConvTranspose1d(2, 2, kernel, factor, padding, bias=False)
    from nnseg.networks.fcn import bilinear_init_

    bilinear_init_(up)
    ramp = torch.arange(10.0).repeat(1, 2, 1)
    out = up(ramp)
    assert out.shape == (1, 2, 10 * factor)
    interior = out[0, 0, factor:-factor]  # away from the zero-padded borders
    steps = interior.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 1 / factor))  # linear interpolation
    torch.testing.assert_close(out[0, 0], out[0, 1])  # per class, no mixing: (2 -> 2, identity across classes)


def test_trace_counts_the_parameters_of_the_real_network() -> None:
    plan = _plan()
    net = build_network(plan, 1, 3)
    footprint = trace(plan, (8, 32, 24), 1, 3)
    assert footprint.parameters == sum(p.numel() for p in net.parameters())
    assert footprint.flops > 0 and footprint.feature_map_voxels > math.prod((8, 32, 24)) * 3


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    net = build_network(_plan(dims=2, features_per_stage=(4, 8, 8, 8), score_stages=(0, 1, 2, 3)), 1, 2)
    x = torch.randn(4, 1, 16, 16)
    target = (x > 0).long()[:, 0]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net.train()(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]  # zero-initialised scores: the encoder learns from step 2


def test_create_builds_through_the_planning_rule() -> None:
    net = nnseg.networks.create("fcn", in_channels=1, classes=3, dims=3, patch_size=(32, 32, 32), base_features=8)
    assert isinstance(net, FCN) and net.score_stages == (1, 2, 3)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
