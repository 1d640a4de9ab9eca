"""Networks built from a plan, through an explicit registry."""

from nnseg.networks.registry import available_architectures, build_network

__all__ = ["available_architectures", "build_network"]
