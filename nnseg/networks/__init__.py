"""Networks built from a plan, through an explicit registry; :func:`create` builds one outside a plan."""

from nnseg.networks.registry import available, available_architectures, build_network, create

__all__ = ["available", "available_architectures", "build_network", "create"]
