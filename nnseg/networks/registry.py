"""Architecture registry: plans.json names an architecture; this maps the name to a builder.

Outside a plan, :func:`create` builds a network with sensible defaults, as segmentation_models.pytorch does::

    import nnseg.networks
    net = nnseg.networks.create("unet", in_channels=1, classes=3, dims=3)
    nnseg.networks.available()   # {"unet": "plain U-Net of nnU-Net ...", ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from nnseg.networks.unet import build_unet
from nnseg.planning.plan import NetworkPlan

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"unet": build_unet}
DESCRIPTIONS: dict[str, str] = {
    "unet": "plain U-Net of nnU-Net (PlainConvUNet): 2 x (conv, instance norm, leaky ReLU) per stage, strided "
    "convolutions, transposed-convolution decoder, deep supervision",
}


def available_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def available() -> dict[str, str]:
    """Registered architectures, name -> one line."""
    return {name: DESCRIPTIONS.get(name, "") for name in available_architectures()}


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
) -> nn.Module:
    """A network by name with nnU-Net's defaults for an isotropic ``patch_size`` (128^3 in 3D, 256^2 in 2D).

    Stages, strides and kernels follow nnU-Net's topology rules (pool while an edge stays >= 4 voxels);
    features double per stage from ``base_features`` up to ``max_features`` (320 in 3D, 512 in 2D).

    Raises:
        KeyError: ``name`` is not registered; the message lists the choices.
        ValueError: ``dims`` is not 2 or 3, or a count is not positive.
    """
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(available_architectures())}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if min(in_channels, classes, base_features) < 1:
        raise ValueError(
            f"in_channels, classes and base_features must be >= 1, got {in_channels}, {classes}, {base_features}"
        )
    from nnseg.planning.topology import features_per_stage, pool_and_kernel_layout

    patch = tuple(patch_size) if patch_size is not None else ((128,) * 3 if dims == 3 else (256,) * 2)
    if len(patch) != dims:
        raise ValueError(f"patch_size needs {dims} values, got {list(patch)}")
    topology = pool_and_kernel_layout((1.0,) * dims, patch, min_edge=4)
    cap = max_features or (320 if dims == 3 else 512)
    features = features_per_stage(topology.n_stages, base_features, cap)
    plan = NetworkPlan.from_topology(topology, features, architecture=name)
    return build_network(plan, in_channels, classes, deep_supervision=deep_supervision)


def build_network(plan: NetworkPlan, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build the network a plan names; a KeyError lists the known architectures."""
    try:
        builder = ARCHITECTURES[plan.architecture]
    except KeyError:
        raise KeyError(f"unknown architecture {plan.architecture!r}; available: {available_architectures()}") from None
    return builder(plan, in_channels, num_classes, **kwargs)
