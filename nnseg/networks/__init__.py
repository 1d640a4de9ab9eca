"""Networks built from a plan, through an explicit registry; :func:`create` builds one outside a plan."""

from nnseg.networks.registry import (
    architecture,
    available,
    available_architectures,
    build_network,
    create,
    segmentation_heads,
)

__all__ = [
    "architecture",
    "available",
    "available_architectures",
    "build_network",
    "create",
    "segmentation_heads",
]
