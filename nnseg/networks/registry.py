"""Architecture registry: plans.json names an architecture; this maps the name to a builder."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from nnseg.networks.unet import build_unet
from nnseg.planning.plan import NetworkPlan

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"unet": build_unet}


def available_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def build_network(plan: NetworkPlan, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build the network a plan names; a KeyError lists the known architectures."""
    try:
        builder = ARCHITECTURES[plan.architecture]
    except KeyError:
        raise KeyError(f"unknown architecture {plan.architecture!r}; available: {available_architectures()}") from None
    return builder(plan, in_channels, num_classes, **kwargs)
