"""One contract for every registered architecture (adding one to the registry adds it here).

Training with deep supervision returns a list of logits, full resolution first, each further head at a size
that divides the patch; eval returns one tensor at the input's size; backward reaches every parameter;
``segmentation_heads()`` names one logit convolution per output; the footprint the planner fits (closed form
or measured) agrees with the built network; a plan made for the architecture survives plans.json, and a
checkpoint of it loads into the predictor with the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg.checkpoint import Checkpoint
from nnseg.inference.predictor import Predictor
from nnseg.io.geometry import Geometry
from nnseg.networks import available_architectures, build_network
from nnseg.networks.plans import NETWORK_PLANS, network_plan_for
from nnseg.networks.topology import pool_and_kernel_layout
from nnseg.networks.trace import trace
from nnseg.planning import load_preset, make_plan
from nnseg.planning.plan import Plan
from nnseg.planning.planner import estimate_footprint
from tests.planning.test_planner import _fingerprint

#: (spacing, patch): an anisotropic 3D patch whose thick axis gets 1-kernels and fewer poolings, and a 2D one
GEOMETRIES = {"3d_aniso": ((4.0, 1.0, 1.0), (8, 32, 24)), "2d": ((1.0, 1.0), (24, 40))}
IN_CHANNELS, CLASSES = 3, 5


def _network_plan(architecture: str, geometry: str):
    spacing, patch = GEOMETRIES[geometry]
    topology = pool_and_kernel_layout(spacing, patch, min_edge=4)
    features = tuple(5 * 2**s for s in range(topology.n_stages))  # odd channel counts: 5, 10, 20, 40, ...
    preset = replace(load_preset("cpu"), base_features=6)
    return network_plan_for(architecture, topology, features, preset), topology.patch_size


def test_every_plan_class_has_a_builder_and_the_reverse() -> None:
    assert set(available_architectures()) == set(NETWORK_PLANS)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("architecture", available_architectures())
def test_outputs_heads_and_gradients(architecture: str, geometry: str) -> None:
    plan, patch = _network_plan(architecture, geometry)
    assert not plan.problems()
    if geometry == "3d_aniso":
        assert plan.kernel_sizes[0][0] == 1 or architecture == "segformer"  # the thick axis is not convolved early
    torch.manual_seed(0)
    network = build_network(plan, IN_CHANNELS, CLASSES, deep_supervision=True).train()
    x = torch.randn(2, IN_CHANNELS, *patch)
    out = network(x)
    outputs = out if isinstance(out, list) else [out]
    assert outputs[0].shape == (2, CLASSES, *patch)
    for previous, head in zip(outputs, outputs[1:]):  # further heads: same or lower resolution, dividing the patch
        assert head.shape[:2] == (2, CLASSES)
        assert all(p % h == 0 and h <= q for p, h, q in zip(patch, head.shape[2:], previous.shape[2:]))
    heads = network.segmentation_heads()
    assert len(heads) == len(outputs)
    assert all(h.out_channels == CLASSES and h.bias is not None and h.bias.shape == (CLASSES,) for h in heads)
    sum(o.float().square().mean() for o in outputs).backward()
    missing = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)
    network.eval()
    with torch.no_grad():
        single = network(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, CLASSES, *patch)
    convs = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs[0].in_channels == IN_CHANNELS


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("architecture", available_architectures())
def test_footprint_agrees_with_the_built_network(architecture: str, geometry: str) -> None:
    plan, patch = _network_plan(architecture, geometry)
    network = build_network(plan, IN_CHANNELS, CLASSES, deep_supervision=False)
    parameters = sum(p.numel() for p in network.parameters())
    measured = trace(plan, patch, IN_CHANNELS, CLASSES)
    planned = estimate_footprint(plan, patch, IN_CHANNELS, CLASSES)
    assert measured.parameters == parameters
    assert planned.parameters == parameters
    assert planned.flops == pytest.approx(measured.flops, rel=0.02)
    # closed forms count what nnU-Net counts (conv outputs, its own way); they stay near what the network makes
    assert planned.feature_map_voxels == pytest.approx(measured.feature_map_voxels, rel=0.25)
    larger = tuple(2 * p for p in patch)  # activations and FLOPs grow with the patch, parameters do not
    bigger = estimate_footprint(plan, larger, IN_CHANNELS, CLASSES)
    assert bigger.feature_map_voxels > planned.feature_map_voxels and bigger.flops > planned.flops
    assert bigger.parameters == planned.parameters


@pytest.mark.parametrize("architecture", available_architectures())
def test_plan_file_and_checkpoint_round_trip(architecture: str, tmp_path: Path) -> None:
    fingerprint = _fingerprint([[4.0, 1.0, 1.0]] * 3, [[12, 40, 36]] * 3)
    preset = replace(load_preset("cpu", architecture=architecture), base_features=4, configurations=("3d_fullres",))
    plan = make_plan(fingerprint, {"background": 0, "a": 1, "b": 2}, preset, nnseg_version="t")
    config = plan.configurations["3d_fullres"]
    assert config.network.architecture == architecture
    assert all(p % s == 0 for p, s in zip(config.patch_size, config.network.total_stride()))
    loaded = Plan.load(plan.save(tmp_path / "plans.json"))
    assert loaded == plan
    torch.manual_seed(1)
    network = build_network(loaded.configurations["3d_fullres"].network, 1, 3).eval()
    checkpoint = Checkpoint.for_network(loaded, "3d_fullres", network)
    path = checkpoint.save(tmp_path / "checkpoint_final.pt")
    predictor = Predictor.from_checkpoints([path], device="cpu", mirror=False)
    assert predictor.config_plan.network == config.network
    restored = predictor.networks[0]
    x = torch.randn(1, 1, *config.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), network(x))
    images = np.random.default_rng(0).normal(size=(1, 12, 40, 36)).astype(np.float32)
    geometry = Geometry(affine=np.diag([1.0, 1.0, 4.0, 1.0]), shape=(12, 40, 36))  # array order (k, j, i)
    labels, _ = predictor.predict_array(images, geometry)
    assert labels.shape == images.shape[1:] and set(np.unique(labels)) <= {0, 1, 2}
    assert math.isfinite(float(config.budget_used))
