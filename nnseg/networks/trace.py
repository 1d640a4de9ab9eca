"""Measure a network's footprint on torch's meta device: shapes flow, nothing is allocated or computed.

:func:`trace` runs one forward pass of the eval-mode network on a meta tensor, summing the output elements of
every convolution, transposed convolution and linear layer (nnU-Net's memory measure, which counts convolution
outputs), plus what modules report through ``extra_feature_map_elements(inputs, output)`` (attention matrices,
concatenations); FLOPs from torch's FlopCounterMode.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnseg.networks.footprint import Footprint
from nnseg.networks.plans import NetworkPlan

COUNTED_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


@lru_cache(maxsize=256)
def trace(plan: NetworkPlan, patch_size: tuple[int, ...], in_channels: int, num_classes: int) -> Footprint:
    """Build ``plan`` on the meta device and run one eval-mode forward pass, counting outputs and FLOPs."""
    from nnseg.networks.registry import build_network

    with torch.device("meta"):
        network = build_network(plan, in_channels, num_classes, deep_supervision=False).eval()
    elements = [0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, COUNTED_LAYERS):
            elements[0] += output.numel()
        extra = getattr(module, "extra_feature_map_elements", None)
        if extra is not None:
            elements[0] += int(extra(inputs, output))

    handles = [m.register_forward_hook(count) for m in network.modules()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.empty(1, in_channels, *patch_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    parameters = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return Footprint(float(elements[0]), float(counter.get_total_flops()), parameters)
