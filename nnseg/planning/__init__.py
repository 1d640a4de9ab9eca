"""Planning: presets, the planner, and the plans.json schema (network plans and topology: :mod:`nnseg.networks`).

The planner (``make_plan``) loads on first use: the CLI reads presets without the fingerprint's readers.
"""

from __future__ import annotations

import importlib
from typing import Any

from nnseg.networks.plans import NetworkPlan
from nnseg.planning.plan import ConfigurationPlan, Plan, PlanError
from nnseg.planning.presets import PlannerPreset, available_presets, load_preset

_LAZY = {"make_plan": ("nnseg.planning.planner", "make_plan")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'nnseg.planning' has no attribute {name!r}")


__all__ = [
    "ConfigurationPlan",
    "NetworkPlan",
    "Plan",
    "PlanError",
    "PlannerPreset",
    "available_presets",
    "load_preset",
    "make_plan",
]
