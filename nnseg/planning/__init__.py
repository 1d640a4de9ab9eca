"""Planning: presets, network topology, the planner, and the plans.json schema."""

from nnseg.networks.plans import NetworkPlan
from nnseg.planning.plan import ConfigurationPlan, Plan, PlanError
from nnseg.planning.planner import make_plan
from nnseg.planning.presets import PlannerPreset, available_presets, load_preset

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
