"""SegFormer: shapes (2D, anisotropic 3D), attention token/key counts, footprint trace, parameters, learning."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

import nnseg.networks
from nnseg.networks.plans import SegFormerPlan
from nnseg.networks.segformer import EfficientSelfAttention, build_segformer
from nnseg.networks.trace import COUNTED_LAYERS, trace

# thick-slice 3D: the stem keeps the first axis, the last stage keeps the third; sr 1 on the short axes
ANISO = SegFormerPlan(
    n_stages=4,
    features_per_stage=(5, 10, 20, 40),
    kernel_sizes=((3, 7, 7), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 4, 4), (2, 2, 2), (2, 2, 2), (2, 2, 1)),
    depths=(1, 2, 1, 1),
    num_heads=(1, 2, 4, 8),
    sr_ratios=((1, 4, 4), (2, 2, 2), (1, 2, 1), (1, 1, 1)),
    mlp_ratio=2,
    decoder_features=12,
)
ANISO_PATCH = (16, 64, 48)
PLAN_2D = SegFormerPlan(
    n_stages=3,
    features_per_stage=(8, 16, 24),
    kernel_sizes=((7, 7), (3, 3), (3, 3)),
    strides=((4, 4), (2, 2), (2, 2)),
    depths=(1, 1, 1),
    num_heads=(1, 2, 3),
    sr_ratios=((4, 4), (2, 2), (1, 1)),
    decoder_features=16,
)


def _stage_shapes(plan: SegFormerPlan, patch: tuple[int, ...]) -> list[tuple[int, ...]]:
    shapes, size = [], patch
    for stride in plan.strides:
        size = tuple(edge // s for edge, s in zip(size, stride))
        shapes.append(size)
    return shapes


def _attention_elements(plan: SegFormerPlan, patch: tuple[int, ...], batch: int = 1) -> int:
    """batch x heads x queries x keys summed over every block, from the plan alone."""
    total = 0
    for s, shape in enumerate(_stage_shapes(plan, patch)):
        queries = math.prod(shape)
        keys = math.prod(edge // r for edge, r in zip(shape, plan.sr_ratios[s]))
        total += plan.depths[s] * batch * plan.num_heads[s] * queries * keys
    return total


def _paper_parameters(plan: SegFormerPlan, in_channels: int, num_classes: int) -> int:
    """Parameters of the paper's network counted from its definition (B0 layout, instance norm in the fuse)."""
    total, c_in = 0, in_channels
    for s, c in enumerate(plan.features_per_stage):
        total += math.prod(plan.kernel_sizes[s]) * c_in * c + c + 2 * c  # overlapping patch embedding + LN
        hidden, sr = plan.mlp_ratio * c, math.prod(plan.sr_ratios[s])
        block = 2 * c + (c * c + c) + (2 * c * c + 2 * c) + (c * c + c)  # LN, q, kv, proj
        block += (sr * c * c + c + 2 * c) if sr > 1 else 0  # reduction conv + LN
        block += 2 * c + (c * hidden + hidden) + (3 ** len(plan.strides[s]) * hidden + hidden) + (hidden * c + c)
        total += plan.depths[s] * block + 2 * c  # blocks + final LN
        c_in = c
    d = plan.decoder_features
    total += sum(c * d + d for c in plan.features_per_stage)  # per-stage linear
    total += plan.n_stages * d * d + 2 * d  # fuse (no bias) + instance norm
    return total + d * num_classes + num_classes


@pytest.mark.parametrize(("plan", "patch"), [(ANISO, ANISO_PATCH), (PLAN_2D, (32, 48))])
def test_output_shapes_and_single_head(plan: SegFormerPlan, patch: tuple[int, ...]) -> None:
    x = torch.randn(2, 3, *patch)
    net = build_segformer(plan, 3, 5)
    assert net(x).shape == (2, 5, *patch)  # training without deep supervision: one tensor
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 5, *patch)
    net = build_segformer(plan, 3, 5, deep_supervision=True).train()
    out = net(x)
    heads = net.segmentation_heads()
    assert isinstance(out, list) and len(out) == len(heads) == 1 and out[0].shape == (2, 5, *patch)
    assert heads[0].out_channels == 5 and heads[0].bias.shape == (5,)


def test_head_bias_adds_directly_to_logits() -> None:
    net = build_segformer(ANISO, 1, 3).eval()
    head = net.segmentation_heads()[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
        out = net(torch.randn(1, 1, *ANISO_PATCH))
    assert torch.allclose(out, head.bias.view(1, 3, 1, 1, 1).expand_as(out))


def test_tokens_and_key_reduction_as_planned() -> None:
    net = build_segformer(ANISO, 1, 2).eval()
    keys: dict[int, int] = {}  # id(attention) -> key tokens (what its kv linear sees)
    seen: list[tuple[int, int, int]] = []  # (queries, keys, channels) per attention call
    handles = []
    for module in net.modules():
        if isinstance(module, EfficientSelfAttention):
            handles.append(
                module.kv.register_forward_hook(lambda m, i, o, a=module: keys.__setitem__(id(a), i[0].shape[1]))
            )
            handles.append(
                module.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1], keys[id(m)], i[0].shape[2])))
            )
    with torch.no_grad():
        net(torch.randn(1, 1, *ANISO_PATCH))
    for handle in handles:
        handle.remove()
    expected = []
    for s, shape in enumerate(_stage_shapes(ANISO, ANISO_PATCH)):
        n = math.prod(shape)
        expected += [(n, n // math.prod(ANISO.sr_ratios[s]), ANISO.features_per_stage[s])] * ANISO.depths[s]
    assert seen == expected
    assert [(16, 16, 12), (8, 8, 6), (4, 4, 3), (2, 2, 3)] == _stage_shapes(ANISO, ANISO_PATCH)
    last = net.stages[-1].blocks[0].attn
    assert not hasattr(last, "sr")  # sr_ratios all 1: keys are the tokens themselves, no reduction conv
    assert net.stages[0].blocks[0].attn.sr.kernel_size == (1, 4, 4) == net.stages[0].blocks[0].attn.sr.stride
    assert net.stages[0].patch_embed.padding == (1, 3, 3)
    dwconv = net.stages[1].blocks[0].mlp.dwconv
    assert dwconv.groups == dwconv.in_channels == 2 * 10 and dwconv.kernel_size == (3, 3, 3)


def test_trace_counts_attention_matrices_and_parameters() -> None:
    footprint = trace(ANISO, ANISO_PATCH, 1, 3)
    net = build_segformer(ANISO, 1, 3).eval()
    layer_outputs = [0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        layer_outputs[0] += output.numel()

    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, COUNTED_LAYERS)]
    with torch.no_grad():
        net(torch.randn(1, 1, *ANISO_PATCH))
    for handle in handles:
        handle.remove()
    attention = _attention_elements(ANISO, ANISO_PATCH)
    assert attention > 0
    assert footprint.feature_map_voxels == layer_outputs[0] + attention
    real = sum(p.numel() for p in net.parameters())
    assert footprint.parameters == real == _paper_parameters(ANISO, 1, 3)
    assert footprint.flops > 0


def test_default_plan_matches_segformer_b0_layout() -> None:
    # the planning rule: B0 widths (2, 4, 10, ...) x base / 2, heads (1, 2, 5, ...); a 32^3 patch pools 3 times, too
    # few for the stride-4 stem (which would leave 2 stages), so three stride-2 stages (3^3 kernels)
    net = nnseg.networks.create("segformer", in_channels=1, classes=3, dims=3, patch_size=(32, 32, 32), base_features=8)
    assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    assert [stage.patch_embed.out_channels for stage in net.stages] == [8, 16, 40]
    assert [stage.blocks[0].attn.num_heads for stage in net.stages] == [1, 2, 5]
    assert [stage.blocks[0].attn.sr_ratio for stage in net.stages] == [(4, 4, 4), (2, 2, 2), (1, 1, 1)]
    assert net.stages[0].patch_embed.stride == (2, 2, 2) and net.stages[0].patch_embed.kernel_size == (3, 3, 3)
    # a 128^3 patch pools 5 times: SegFormer's stride-4 7^3 stem and four stages
    big = nnseg.networks.create("segformer", in_channels=1, classes=3, dims=3, base_features=8)
    assert len(big.stages) == 4
    assert big.stages[0].patch_embed.stride == (4, 4, 4) and big.stages[0].patch_embed.kernel_size == (7, 7, 7)


def test_invalid_sr_ratios_name_the_field() -> None:
    with pytest.raises(ValueError, match="sr_ratios"):
        build_segformer(replace(PLAN_2D, sr_ratios=((4, 4, 4), (2, 2), (1, 1))), 1, 2)
    with pytest.raises(ValueError, match="num_heads"):
        build_segformer(replace(PLAN_2D, num_heads=(3, 2, 3)), 1, 2)


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    x = nn.functional.interpolate(torch.randn(4, 1, 8, 8), scale_factor=4.0)  # learnable at the stem's stride 4
    target = (x[:, 0] > 0.3).long() + (x[:, 0] > 1.0).long()
    net = build_segformer(PLAN_2D, 1, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = nn.functional.cross_entropy(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
