"""Architecture registry: plans.json names an architecture; this maps the name to its builder.

Every architecture keeps one contract (checked for each by ``tests/networks/test_contract.py``): built from
its plan (:mod:`nnseg.networks.plans`) for ``in_channels`` and ``num_classes``; in training with deep
supervision it returns a list of logits, highest resolution first (full resolution first, each further head
at its own, lower resolution); otherwise, and always in eval mode, one tensor at the input's size;
``segmentation_heads()`` names the convolutions that produce logits (one per output).

Outside a plan, :func:`create` builds a network with sensible defaults, as segmentation_models.pytorch does::

    import nnseg.networks
    net = nnseg.networks.create("unetpp", in_channels=1, classes=3, dims=3)
    nnseg.networks.available()   # {"unet": "plain U-Net of nnU-Net ...", ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import nn

from nnseg.networks import deeplabv3plus, fcn, resenc_unet, segformer, unet, unetpp
from nnseg.networks.plans import NETWORK_PLANS, NNUNET_BLOCKS, NetworkPlan, network_plan_for
from nnseg.networks.topology import features_per_stage, pool_and_kernel_layout


@dataclass(frozen=True)
class Architecture:
    """One registered network.

    Attributes:
        name: the plan's ``architecture`` tag (its plan class holds the one-line summary).
        build: ``(plan, in_channels, num_classes, deep_supervision=None) -> nn.Module``.
    """

    name: str
    build: Callable[..., nn.Module]


def _registry() -> dict[str, Architecture]:
    entries = [
        Architecture("unet", unet.build_unet),
        Architecture("resenc_unet", resenc_unet.build_resenc_unet),
        Architecture("unetpp", unetpp.build_unetpp),
        Architecture("deeplabv3plus", deeplabv3plus.build_deeplabv3plus),
        Architecture("segformer", segformer.build_segformer),
        Architecture("fcn", fcn.build_fcn),
    ]
    missing = set(NETWORK_PLANS) ^ {entry.name for entry in entries}
    if missing:  # a plan class without a builder, or the reverse: a programming error, caught by the tests
        raise RuntimeError(f"architectures without both a plan class and a builder: {sorted(missing)}")
    return {entry.name: entry for entry in entries}


ARCHITECTURES: dict[str, Architecture] = _registry()


def available_architectures() -> list[str]:
    return list(ARCHITECTURES)


def available() -> dict[str, str]:
    """Registered architectures, name -> one line."""
    return {name: NETWORK_PLANS[name].summary for name in ARCHITECTURES}


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; a KeyError lists the choices."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(available_architectures())}") from None


def create(
    name: str,
    *,
    in_channels: int,
    classes: int,
    dims: int = 3,
    patch_size: Sequence[int] | None = None,
    base_features: int = 32,
    max_features: int | None = None,
    deep_supervision: bool = False,
    **plan_fields,
) -> nn.Module:
    """A network by name with nnU-Net's defaults for an isotropic ``patch_size`` (128^3 in 3D, 256^2 in 2D).

    Stages, strides and kernels follow nnU-Net's topology rules (pool while an edge stays >= 4 voxels);
    features double per stage from ``base_features`` up to ``max_features`` (320 in 3D, 512 in 2D); the rest is
    the architecture's planning rule (``nnseg.networks.plans``). ``plan_fields`` override fields of the
    architecture's plan, e.g. ``create("unetpp", ..., prune_level=2)``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the choices.
        ValueError: ``dims`` is not 2 or 3, a count is not positive, or a plan field is unknown or inconsistent.
    """
    architecture(name)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if min(in_channels, classes, base_features) < 1:
        raise ValueError(
            f"in_channels, classes and base_features must be >= 1, got {in_channels}, {classes}, {base_features}"
        )
    patch = tuple(patch_size) if patch_size is not None else ((128,) * 3 if dims == 3 else (256,) * 2)
    if len(patch) != dims:
        raise ValueError(f"patch_size needs {dims} values, got {list(patch)}")
    topology = pool_and_kernel_layout((1.0,) * dims, patch, min_edge=4)
    cap = max_features or (320 if dims == 3 else 512)
    blocks = replace(NNUNET_BLOCKS, base_features=base_features)
    plan = network_plan_for(name, topology, features_per_stage(topology.n_stages, base_features, cap), blocks)
    if plan_fields:
        try:
            plan = replace(plan, **plan_fields)
        except TypeError as exc:
            raise ValueError(f"{name}: {exc}") from None
    problems = plan.problems()
    if problems:
        raise ValueError(f"{name}: {problems[0]}")
    return build_network(plan, in_channels, classes, deep_supervision=deep_supervision)


def build_network(plan: NetworkPlan, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build the network a plan names; a KeyError lists the known architectures."""
    return architecture(plan.architecture).build(plan, in_channels, num_classes, **kwargs)


def segmentation_heads(network: nn.Module) -> list[nn.Module]:
    """The convolutions that produce ``network``'s logits, one per output (the contract's ``segmentation_heads()``);
    TypeError for a network without them."""
    heads = getattr(network, "segmentation_heads", None)
    if heads is None:
        raise TypeError(f"{type(network).__name__} has no segmentation_heads() (part of the network contract)")
    return list(heads())
