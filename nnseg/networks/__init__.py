"""Networks built from a plan, through an explicit registry; :func:`create` builds one outside a plan.

The network plans (:mod:`nnseg.networks.plans`), topology rules and closed-form footprints are plain Python that the
planner reads without torch; the builders (:mod:`nnseg.networks.registry`) load on first use of these names.
"""

from __future__ import annotations

import importlib
from typing import Any

_REGISTRY_NAMES = (
    "architecture",
    "available",
    "available_architectures",
    "build_network",
    "create",
    "segmentation_heads",
)
_LAZY = {name: "nnseg.networks.registry" for name in _REGISTRY_NAMES}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnseg.networks' has no attribute {name!r}")


__all__ = list(_REGISTRY_NAMES)
