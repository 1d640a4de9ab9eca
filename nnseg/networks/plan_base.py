"""What every network plan shares: the base :class:`NetworkPlan` (topology fields, building blocks, consistency
checks), the planner constants a planning rule reads (:class:`BlockRules`, nnU-Net's :data:`NNUNET_BLOCKS`) and
the helpers the architectures' plans (:mod:`nnseg.networks.plans`) build on. No torch here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from nnseg.networks.topology import Topology

#: Residual blocks per encoder stage of nnU-Net's ResEnc presets (and the default of every residual encoder).
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)


class BlockRules(Protocol):
    """What a planning rule reads besides the topology (:class:`BlockCounts`, or a planner preset)."""

    @property
    def base_features(self) -> int: ...
    @property
    def conv_per_stage_encoder(self) -> int: ...
    @property
    def conv_per_stage_decoder(self) -> int: ...
    @property
    def encoder_blocks_per_stage(self) -> tuple[int, ...]: ...


@dataclass(frozen=True, kw_only=True)
class BlockCounts:
    """The constants a planning rule reads besides the topology: nnU-Net's defaults here; a planner preset
    (:class:`nnseg.planning.presets.PlannerPreset`, which takes its defaults from :data:`NNUNET_BLOCKS`) has the
    same fields and is passed in their place."""

    base_features: int = 32
    conv_per_stage_encoder: int = 2
    conv_per_stage_decoder: int = 2
    encoder_blocks_per_stage: tuple[int, ...] = RESENC_BLOCKS_PER_STAGE


#: nnU-Net's block counts (the planner presets' defaults, and :func:`nnseg.networks.create`'s)
NNUNET_BLOCKS = BlockCounts()


@dataclass(frozen=True, kw_only=True)
class NetworkPlan:
    """What every architecture shares.

    Attributes:
        architecture: registry key of the network builder (the union's tag).
        n_stages: resolution levels, including the bottleneck.
        features_per_stage: output channels per stage.
        kernel_sizes: per stage, per axis (planning order).
        strides: per stage, per axis; stage s starts by downsampling with ``strides[s]``.
        norm: normalization layer.
        nonlinearity: activation.
        negative_slope: leaky ReLU slope.
        conv_bias: convolutions have a bias term.
        deep_supervision: the network emits segmentations at lower resolutions too during training.
    """

    architecture: str
    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    norm: Literal["instance"] = "instance"
    nonlinearity: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = 0.01
    conv_bias: bool = True
    deep_supervision: bool = True

    #: one line for ``nnseg plan --help`` and :func:`nnseg.networks.available`
    summary: ClassVar[str] = ""
    #: fields holding one value per stage (validated against ``n_stages``)
    per_stage_fields: ClassVar[tuple[str, ...]] = ("features_per_stage", "kernel_sizes", "strides")
    #: fields holding positive integers
    positive_fields: ClassVar[tuple[str, ...]] = ("features_per_stage",)

    @property
    def dims(self) -> int:
        return len(self.kernel_sizes[0])

    def total_stride(self) -> tuple[int, ...]:
        """Product of the strides per axis: the patch must be divisible by it."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(len(self.strides[0])))

    #: stages the architecture needs at least
    min_stages: ClassVar[int] = 1

    def problems(self) -> list[str]:
        """``field: what is wrong`` for each inconsistency (field names relative to the network). The shared
        fields are checked first; the architecture's own checks run only on a consistent topology."""
        if self.n_stages < self.min_stages:
            return [f"n_stages must be >= {self.min_stages} for {self.architecture}, got {self.n_stages}"]
        found = []
        for name in self.per_stage_fields:
            value = getattr(self, name)
            if len(value) != self.n_stages:
                found.append(f"{name} has {len(value)} entries for n_stages={self.n_stages}")
        for name in self.positive_fields:
            value = getattr(self, name)
            items = value if isinstance(value, tuple) else (value,)
            flat = [v for item in items for v in (item if isinstance(item, tuple) else (item,))]
            if any(v < 1 for v in flat):
                found.append(f"{name} must hold values >= 1, got {show_value(value)}")
        if not (math.isfinite(self.negative_slope) and self.negative_slope >= 0):
            found.append(f"negative_slope must be a finite number >= 0, got {self.negative_slope}")
        dims = len(self.kernel_sizes[0]) if self.kernel_sizes else 0
        for name in ("kernel_sizes", "strides"):
            for stage, per_axis in enumerate(getattr(self, name)):
                if len(per_axis) != dims or any(v < 1 for v in per_axis):
                    found.append(f"{name}[{stage}] must hold {dims} positive values, got {list(per_axis)}")
        return found or self._own_problems()

    def _own_problems(self) -> list[str]:
        """The architecture's own consistency checks (the shared fields are consistent when this runs)."""
        return []

    def _decoder_problems(self, counts: tuple[int, ...]) -> list[str]:
        if len(counts) != self.n_stages - 1:
            return [f"n_conv_per_stage_decoder needs n_stages - 1 = {self.n_stages - 1} entries, got {len(counts)}"]
        return []

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> NetworkPlan:
        """The architecture's planning rule: its plan for a topology the planner chose."""
        raise NotImplementedError(f"{cls.__name__} has no planning rule")


def topology_fields(topology: Topology, features: Sequence[int]) -> dict:
    """The shared fields of a network plan that follows the planner's topology as it is."""
    return {
        "n_stages": topology.n_stages,
        "features_per_stage": tuple(features),
        "kernel_sizes": topology.kernel_sizes,
        "strides": topology.strides,
    }


def repeat_last(values: Sequence[int], n: int) -> tuple[int, ...]:
    """The first ``n`` values, the last one repeated when there are fewer."""
    values = tuple(values)
    return values[:n] + (values[-1],) * max(0, n - len(values))


def show_value(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
