"""UNet++: nested dense nodes, deep supervision on the top nodes (full resolution), pruning at inference."""

from __future__ import annotations

import pytest
import torch

import nnseg.networks
from nnseg.networks import build_network
from nnseg.networks.plans import UNetPlusPlusPlan
from nnseg.networks.trace import trace
from nnseg.networks.unetpp import UNetPlusPlus

ANISO = dict(
    kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
)


def _plan(dims: int = 3, **fields) -> UNetPlusPlusPlan:
    topology = ANISO if dims == 3 else dict(kernel_sizes=((3, 3),) * 4, strides=((1, 1), (2, 2), (2, 2), (2, 2)))
    defaults = dict(n_stages=4, features_per_stage=(5, 10, 20, 40), n_conv_per_stage=(2,) * 4, **topology)
    return UNetPlusPlusPlan(**{**defaults, **fields})


@pytest.mark.parametrize(("dims", "patch"), [(3, (8, 32, 24)), (2, (24, 40))])
def test_heads_are_full_resolution_deepest_first_and_eval_returns_one_tensor(dims: int, patch) -> None:
    torch.manual_seed(0)
    net = build_network(_plan(dims), 3, 5)
    x = torch.randn(2, 3, *patch)
    out = net.train()(x)
    assert isinstance(out, list) and len(out) == 3  # X[0][3], X[0][2], X[0][1]
    assert all(o.shape == (2, 5, *patch) for o in out)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 5, *patch)


def test_nodes_concatenate_every_earlier_node_of_their_row_and_upsample_by_the_stride() -> None:
    plan = _plan(n_conv_per_stage=(1, 2, 3, 1))
    net = build_network(plan, 3, 5)
    assert [len(row) for row in net.nodes] == [4, 3, 2, 1]  # n(n+1)/2 = 10 nodes
    for i, row in enumerate(net.nodes):
        assert len(row[0]) == plan.n_conv_per_stage[i]
        assert tuple(row[0][0].conv.stride) == plan.strides[i]
        encoder_input = 3 if i == 0 else plan.features_per_stage[i - 1]
        for j, node in enumerate(row):
            first = node[0].conv  # X[i][j] reads X[i][0..j-1] and the upsampled X[i+1][j-1]
            assert first.in_channels == ((j + 1) * plan.features_per_stage[i] if j else encoder_input)
            assert first.out_channels == plan.features_per_stage[i] and tuple(first.kernel_size) == plan.kernel_sizes[i]
            assert len(node) == plan.n_conv_per_stage[i]
        for up in net.ups[i]:
            assert tuple(up.kernel_size) == tuple(up.stride) == plan.strides[i + 1]
            assert (up.in_channels, up.out_channels) == (plan.features_per_stage[i + 1], plan.features_per_stage[i])
    assert len(net.segmentation_heads()) == 3
    assert len(build_network(plan, 3, 5, deep_supervision=False).segmentation_heads()) == 1


def test_segmentation_heads_are_in_the_training_lists_order() -> None:
    net = build_network(_plan(), 1, 3)
    for k, head in enumerate(net.segmentation_heads()):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, float(k))
    out = net.train()(torch.randn(1, 1, 8, 32, 24))
    assert [o.unique().tolist() for o in out] == [[0.0], [1.0], [2.0]]


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pruned_eval_runs_only_the_subnetwork_and_equals_its_supervised_output(level: int) -> None:
    torch.manual_seed(0)
    full = build_network(_plan(), 1, 3)
    pruned = build_network(_plan(prune_level=level), 1, 3)
    pruned.load_state_dict(full.state_dict())
    called = set()
    for i, row in enumerate(pruned.nodes):
        for j, node in enumerate(row):
            node.register_forward_hook(lambda *_, key=("node", i, j): called.add(key))
        for j, up in enumerate(pruned.ups[i], start=1):
            up.register_forward_hook(lambda *_, key=("up", i, j): called.add(key))
    for j in range(1, 4):
        pruned.head_for(j).register_forward_hook(lambda *_, key=("head", j): called.add(key))
    x = torch.randn(1, 1, 8, 32, 24)
    with torch.no_grad():
        out = pruned.eval()(x)
        supervised = full.train()(x)  # instance norm keeps no running statistics: train == eval numerically
    expected = {("node", i, j) for i in range(4) for j in range(4 - i) if i + j <= level}
    expected |= {("up", i, j) for i in range(3) for j in range(1, 4 - i) if i + j <= level} | {("head", level)}
    assert called == expected  # nothing of depth > level, no deeper column
    torch.testing.assert_close(out, supervised[3 - level])


def test_pruning_reduces_the_traced_flops_and_feature_maps() -> None:
    costs = [trace(_plan(prune_level=level), (8, 32, 24), 1, 3) for level in (1, 2, 3)]
    assert costs[0].flops < costs[1].flops < costs[2].flops
    assert costs[0].feature_map_voxels < costs[1].feature_map_voxels < costs[2].feature_map_voxels
    assert costs[2].flops == trace(_plan(), (8, 32, 24), 1, 3).flops  # level n-1 is the whole network


def test_trace_counts_the_parameters_of_the_inference_network() -> None:
    plan = _plan()
    net = build_network(plan, 1, 3, deep_supervision=False)
    assert trace(plan, (8, 32, 24), 1, 3).parameters == sum(p.numel() for p in net.parameters())


def test_without_deep_supervision_training_returns_the_deepest_top_node() -> None:
    net = build_network(_plan(), 1, 3, deep_supervision=False)
    out = net.train()(torch.randn(2, 1, 8, 32, 24))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 8, 32, 24)


def test_a_prune_level_outside_the_network_names_the_field() -> None:
    with pytest.raises(ValueError, match="prune_level"):
        build_network(_plan(prune_level=4), 1, 3)


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    net = build_network(_plan(dims=2, features_per_stage=(4, 8, 8, 8)), 1, 2)
    x = torch.randn(4, 1, 16, 16)
    target = (x > 0).long()[:, 0]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        out = net.train()(x)
        loss = sum(torch.nn.functional.cross_entropy(o, target) / 2**k for k, o in enumerate(out))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_create_builds_through_the_planning_rule() -> None:
    net = nnseg.networks.create("unetpp", in_channels=1, classes=3, dims=3, patch_size=(32, 32, 32), base_features=8)
    assert isinstance(net, UNetPlusPlus) and net.n_stages == 4
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    pruned = nnseg.networks.create(
        "unetpp", in_channels=1, classes=3, patch_size=(32, 32, 32), base_features=4, prune_level=1
    )
    assert pruned.prune_level == 1
