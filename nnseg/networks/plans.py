"""Network plans: one frozen dataclass per architecture, a tagged union in plans.json (tag ``architecture``).

Every network plan shares the topology the planner derives from spacing and patch
(``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides``: per stage, per axis, in
planning order; the patch is divisible by the product of the strides) and the building blocks
(instance norm, leaky ReLU). Each architecture adds its own fields and its own consistency
checks (:meth:`NetworkPlan.problems`; the base class and shared helpers:
:mod:`nnseg.networks.plan_base`). No torch here: the builders live in :mod:`nnseg.networks`.

``from_topology`` is each architecture's planning rule: given the topology the planner chose for
a patch and the preset's constants, the plan that will be built (and whose footprint is fitted
to the preset's budget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from nnseg.networks.plan_base import (
    NNUNET_BLOCKS,
    RESENC_BLOCKS_PER_STAGE,
    BlockCounts,
    BlockRules,
    NetworkPlan,
    repeat_last,
    topology_fields,
)
from nnseg.networks.topology import Topology


@dataclass(frozen=True, kw_only=True)
class UNetPlan(NetworkPlan):
    """nnU-Net's plain U-Net: per stage ``n_conv`` x (conv, instance norm, leaky ReLU); strided-conv down,
    transposed-conv up, skip concatenation; deep supervision on every decoder level but the lowest.

    Attributes:
        n_conv_per_stage: encoder convolutions per stage.
        n_conv_per_stage_decoder: decoder convolutions per stage (n_stages - 1 entries, deepest first).
    """

    architecture: Literal["unet"] = "unet"
    summary = (
        "plain U-Net of nnU-Net (PlainConvUNet): 2 x (conv, instance norm, leaky ReLU) per stage, strided "
        "convolutions, transposed-convolution decoder, deep supervision"
    )
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]

    per_stage_fields = (*NetworkPlan.per_stage_fields, "n_conv_per_stage")
    positive_fields = ("features_per_stage", "n_conv_per_stage", "n_conv_per_stage_decoder")

    def _own_problems(self) -> list[str]:
        found = self._decoder_problems(self.n_conv_per_stage_decoder)
        if set(self.n_conv_per_stage) | set(self.n_conv_per_stage_decoder) != {2}:
            found.append(
                "n_conv_per_stage / n_conv_per_stage_decoder: the plain U-Net (MONAI's DynUNet) has 2 convolutions "
                f"per stage, got {list(self.n_conv_per_stage)} / {list(self.n_conv_per_stage_decoder)}"
            )
        return found

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> UNetPlan:
        n = topology.n_stages
        return cls(
            **topology_fields(topology, features),
            n_conv_per_stage=(preset.conv_per_stage_encoder,) * n,
            n_conv_per_stage_decoder=(preset.conv_per_stage_decoder,) * (n - 1),
        )


@dataclass(frozen=True, kw_only=True)
class ResEncUNetPlan(NetworkPlan):
    """nnU-Net's residual-encoder U-Net (ResidualEncoderUNet of its ResEnc presets).

    A stem convolution, then per stage ``n_blocks_per_stage[s]`` residual blocks (conv-norm-act, conv-norm,
    shortcut, act; the first block of a stage carries its stride, its shortcut average-pools and projects);
    the plain U-Net's decoder with ``n_conv_per_stage_decoder`` convolutions per stage.

    Attributes:
        n_blocks_per_stage: residual blocks per encoder stage.
        n_conv_per_stage_decoder: decoder convolutions per stage (n_stages - 1 entries, deepest first).
    """

    architecture: Literal["resenc_unet"] = "resenc_unet"
    summary = (
        "nnU-Net's residual-encoder U-Net (ResEnc M/L presets): residual blocks (1, 3, 4, 6, 6, ...) per "
        "encoder stage, one convolution per decoder stage, deep supervision"
    )
    n_blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]

    per_stage_fields = (*NetworkPlan.per_stage_fields, "n_blocks_per_stage")
    positive_fields = ("features_per_stage", "n_blocks_per_stage", "n_conv_per_stage_decoder")

    min_stages = 2

    def _own_problems(self) -> list[str]:
        return self._decoder_problems(self.n_conv_per_stage_decoder)

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> ResEncUNetPlan:
        """nnU-Net's ResEnc rule: blocks (1, 3, 4, 6, 6, ...) per stage, one decoder convolution per stage."""
        n = topology.n_stages
        blocks = repeat_last(preset.encoder_blocks_per_stage, n)
        return cls(
            **topology_fields(topology, features),
            n_blocks_per_stage=blocks,
            n_conv_per_stage_decoder=(1,) * (n - 1),
        )


@dataclass(frozen=True, kw_only=True)
class UNetPlusPlusPlan(NetworkPlan):
    """UNet++ (Zhou et al. 2018): nested, densely connected skip pathways between encoder and decoder.

    Node X[i][j] (depth i, column j) convolves the concatenation of X[i][0..j-1] and the upsampled X[i+1][j-1].
    Deep supervision on the top nodes X[0][1..n-1]; the network can be pruned to depth L at inference.

    Attributes:
        n_conv_per_stage: convolutions per node at each depth.
        prune_level: at inference use only the sub-network of depth L (1..n_stages-1; its output is X[0][L]);
            None keeps the whole network.
    """

    architecture: Literal["unetpp"] = "unetpp"
    summary = (
        "UNet++: nested dense skip pathways, deep supervision on the top nodes, prunable at inference (plan "
        "field prune_level)"
    )
    n_conv_per_stage: tuple[int, ...]
    prune_level: int | None = None

    per_stage_fields = (*NetworkPlan.per_stage_fields, "n_conv_per_stage")
    positive_fields = ("features_per_stage", "n_conv_per_stage")

    min_stages = 2

    @property
    def is_pruned(self) -> bool:
        """Inference uses a shallower sub-network than the whole."""
        return self.prune_level is not None and self.prune_level < self.n_stages - 1

    def _own_problems(self) -> list[str]:
        if self.prune_level is not None and not 1 <= self.prune_level <= self.n_stages - 1:
            return [f"prune_level must be null or in 1..{self.n_stages - 1}, got {self.prune_level}"]
        if self.is_pruned and not self.deep_supervision:
            return [
                "prune_level: a pruned UNet++ predicts with a head that only deep supervision trains; set "
                "deep_supervision to true or prune_level to null"
            ]
        return []

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> UNetPlusPlusPlan:
        n = topology.n_stages
        return cls(
            **topology_fields(topology, features),
            n_conv_per_stage=(preset.conv_per_stage_encoder,) * n,
        )


@dataclass(frozen=True, kw_only=True)
class DeepLabV3PlusPlan(NetworkPlan):
    """3D DeepLabV3+ (Chen et al. 2018) on a residual encoder.

    The encoder is the ResEnc encoder of the topology, except that stages whose stride would take the total
    downsampling past ``output_stride`` keep stride 1 and dilate their convolutions by the stride they skip
    (atrous convolution). ASPP on the last stage: a 1x1 branch, one 3x3 branch per entry of ``aspp_rates``
    (per-axis dilation rates, smaller along a coarse axis), image pooling, then a 1x1 projection. The decoder
    upsamples to the ``low_level_stage``, concatenates its features projected to ``low_level_features``, refines
    with two 3x3 convolutions of ``decoder_features`` and upsamples the logits to the input.

    Attributes:
        n_blocks_per_stage: residual blocks per encoder stage.
        output_stride: largest total downsampling per axis (8 or 16; an axis with less keeps what it has).
        aspp_rates: per atrous branch, its dilation per axis.
        aspp_features: channels of every ASPP branch and of its projection.
        low_level_stage: the encoder stage whose features the decoder fuses (0 .. n_stages-1).
        low_level_features: channels the low-level features are projected to.
        decoder_features: channels of the decoder's refinement convolutions.
    """

    architecture: Literal["deeplabv3plus"] = "deeplabv3plus"
    summary = (
        "DeepLabV3+: residual encoder with atrous (dilated) last stages (output stride 8/16), ASPP with image "
        "pooling and per-axis rates, decoder fusing low-level features"
    )
    n_blocks_per_stage: tuple[int, ...]
    output_stride: int = 16
    aspp_rates: tuple[tuple[int, ...], ...]
    aspp_features: int
    low_level_stage: int
    low_level_features: int = 48
    decoder_features: int
    deep_supervision: bool = False

    per_stage_fields = (*NetworkPlan.per_stage_fields, "n_blocks_per_stage")
    positive_fields = (
        "features_per_stage",
        "n_blocks_per_stage",
        "aspp_rates",
        "aspp_features",
        "low_level_features",
        "decoder_features",
    )

    def _own_problems(self) -> list[str]:
        found = []
        if self.output_stride not in (4, 8, 16, 32):
            found.append(f"output_stride must be 4, 8, 16 or 32, got {self.output_stride}")
        if not 0 <= self.low_level_stage <= self.n_stages - 1:
            found.append(f"low_level_stage must be in 0..{self.n_stages - 1}, got {self.low_level_stage}")
        for index, rates in enumerate(self.aspp_rates):
            if len(rates) != self.dims:
                found.append(f"aspp_rates[{index}] needs {self.dims} values, got {list(rates)}")
        return found

    def dilations(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """Per stage: (stride actually applied, dilation of its convolutions), per axis."""
        result = []
        reached = [1] * self.dims
        dilation = [1] * self.dims
        for stride in self.strides:
            applied = []
            for axis, s in enumerate(stride):
                if reached[axis] * s <= self.output_stride:
                    reached[axis] *= s
                    applied.append(s)
                else:
                    dilation[axis] *= s
                    applied.append(1)
            result.append((tuple(applied), tuple(dilation)))
        return tuple(result)

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> DeepLabV3PlusPlan:
        """Output stride 16 when the most-pooled axes span >= 128 voxels, else 8 (a small patch keeps a usable
        bottleneck); low-level features from the stage at stride 4 (fewer when the topology is that shallow);
        ASPP rates per axis from the bottleneck's edge in the paper's proportions: (6, 12, 18) on its 33-voxel
        maps are 3/16, 3/8 and 9/16 of the edge, so a tap always lands inside the feature map (a rate at or
        beyond the edge would make the branch a 1x1 convolution at 27x its cost)."""
        n = topology.n_stages
        patch = topology.patch_size
        most_pools = max(topology.pool_per_axis)
        pooled_most = [p for p, pools in zip(patch, topology.pool_per_axis) if pools == most_pools]
        output_stride = 16 if min(pooled_most) >= 128 else 8
        plan = cls(
            **topology_fields(topology, features),
            n_blocks_per_stage=repeat_last(preset.encoder_blocks_per_stage, n),
            output_stride=output_stride,
            aspp_rates=(),
            aspp_features=min(256, 8 * features[0]),
            low_level_stage=min(2, n - 1),
            low_level_features=min(48, 2 * features[0]),
            decoder_features=min(256, 8 * features[0]),
        )
        applied = [math.prod(stride[axis] for stride, _ in plan.dilations()) for axis in range(len(patch))]
        edges = [p // a for p, a in zip(patch, applied)]
        rates = []
        for fraction in (3 / 16, 3 / 8, 9 / 16):
            rate = tuple(max(1, min(edge - 1, round(edge * fraction))) for edge in edges)
            if rate not in rates:
                rates.append(rate)
        return replace(plan, aspp_rates=tuple(rates))


@dataclass(frozen=True, kw_only=True)
class SegFormerPlan(NetworkPlan):
    """3D SegFormer (Xie et al. 2021): hierarchical transformer encoder and an all-MLP decoder.

    Here ``n_stages`` counts the encoder's transformer stages. Stage s embeds its input with an overlapping
    convolution (``kernel_sizes[s]``, ``strides[s]``, padding kernel // 2) to ``features_per_stage[s]``
    channels, then applies ``depths[s]`` blocks of efficient self-attention (keys and values spatially reduced
    by ``sr_ratios[s]`` per axis, ``num_heads[s]`` heads) and Mix-FFN (linear, 3x3 depthwise conv, GELU, linear;
    hidden ``mlp_ratio`` x). The decoder projects every stage to ``decoder_features``, upsamples to the first
    stage's resolution, fuses, predicts, and upsamples the logits to the input (no deep supervision).

    Attributes:
        depths: transformer blocks per stage.
        num_heads: attention heads per stage (each divides the stage's features).
        sr_ratios: per stage, the spatial reduction of keys/values per axis.
        mlp_ratio: Mix-FFN hidden width / features.
        decoder_features: channels of the all-MLP decoder.
    """

    architecture: Literal["segformer"] = "segformer"
    summary = (
        "SegFormer: hierarchical transformer encoder (overlapping patch embedding, spatially reduced "
        "self-attention, Mix-FFN with depthwise conv), all-MLP decoder"
    )
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    sr_ratios: tuple[tuple[int, ...], ...]
    mlp_ratio: int = 4
    decoder_features: int
    deep_supervision: bool = False

    per_stage_fields = (*NetworkPlan.per_stage_fields, "depths", "num_heads", "sr_ratios")
    positive_fields = ("features_per_stage", "depths", "num_heads", "sr_ratios", "mlp_ratio", "decoder_features")

    def _own_problems(self) -> list[str]:
        found = []
        for stage, ratios in enumerate(self.sr_ratios):
            if len(ratios) != self.dims:
                found.append(f"sr_ratios[{stage}] needs {self.dims} values, got {list(ratios)}")
        for stage, (features, heads) in enumerate(zip(self.features_per_stage, self.num_heads)):
            if heads > 0 and features % heads:
                found.append(f"num_heads[{stage}] = {heads} does not divide features_per_stage[{stage}] = {features}")
        return found

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> SegFormerPlan:
        """Four stages (fewer for shallow topologies) at total strides ~4, 8, 16, 32 per axis (2, 4, 8, 16 when
        the topology pools fewer than 5 times), grouped from the topology's strides so the patch divisibility is
        the same; SegFormer-B0-like widths scaled to the preset
        (2, 4, 10, 16 x half the base features, with 1, 2, 5, 8 heads), 2 blocks per stage, spatial reduction 8, 4, 2, 1
        per axis in 2D (keys / 64, 16, 4, 1) and 4, 2, 1, 1 in 3D (keys / 64, 8, 1, 1), capped per axis by what the
        stage's feature map allows."""
        strides = list(topology.strides[1:])  # stage 0 of the topology has stride 1
        dims = len(topology.patch_size)
        if not strides:
            strides = [(1,) * dims]
        # with 5+ downsamplings the first embedding takes two at once (SegFormer's stride-4 stem); fewer (small
        # patches) keep one per stage, so the encoder stays hierarchical (3-4 stages) instead of collapsing to 2
        stem = 2 if len(strides) >= 5 else 1
        groups: list[list[tuple[int, ...]]] = [strides[:stem]] + [[s] for s in strides[stem:]]
        while len(groups) > 4:  # merge the deepest into the last stage
            groups[-2].extend(groups.pop())
        stage_strides = tuple(tuple(math.prod(s[a] for s in group) for a in range(dims)) for group in groups)
        n = len(stage_strides)
        widths, heads = (2, 4, 10, 16), (1, 2, 5, 8)  # SegFormer-B0: (32, 64, 160, 256) at unit 16
        unit = max(4, preset.base_features // 2)  # nnU-Net's 32 base features -> B0's widths
        stage_features = tuple(widths[s] * unit for s in range(n))  # each divisible by its heads (2 x unit)
        kernels = tuple(tuple(2 * st - 1 if st > 1 else 3 for st in stride) for stride in stage_strides)
        size = list(topology.patch_size)
        sr_ratios = []
        for s, stride in enumerate(stage_strides):
            size = [edge // st for edge, st in zip(size, stride)]
            wanted = (8, 4, 2, 1)[s] if dims == 2 else (4, 2, 1, 1)[s]  # 3D: about the paper's key reduction
            sr_ratios.append(tuple(max(1, min(wanted, edge // 2)) for edge in size))
        return cls(
            n_stages=n,
            features_per_stage=stage_features,
            kernel_sizes=kernels,
            strides=stage_strides,
            depths=(2,) * n,
            num_heads=heads[:n],
            sr_ratios=tuple(sr_ratios),
            decoder_features=min(256, 16 * unit),
            deep_supervision=False,
        )


@dataclass(frozen=True, kw_only=True)
class FCNPlan(NetworkPlan):
    """FCN-8s-style 3D network (Long et al. 2015): a plain convolutional encoder; 1x1 score layers on the
    last three stages, fused coarse to fine by learned (transposed-convolution) upsampling, then upsampled
    to the input by the remaining stride. No decoder convolutions, no deep supervision.

    Attributes:
        n_conv_per_stage: encoder convolutions per stage.
        score_stages: the encoder stages that get a score layer (deepest last; FCN-8s: the last three).
    """

    architecture: Literal["fcn"] = "fcn"
    summary = "FCN-8s: convolutional encoder, score layers at three depths fused by learned upsampling"
    n_conv_per_stage: tuple[int, ...]
    score_stages: tuple[int, ...]
    deep_supervision: bool = False

    per_stage_fields = (*NetworkPlan.per_stage_fields, "n_conv_per_stage")
    positive_fields = ("features_per_stage", "n_conv_per_stage")

    def _own_problems(self) -> list[str]:
        found = []
        if not self.score_stages or list(self.score_stages) != sorted(set(self.score_stages)):
            found.append(f"score_stages must be increasing stage indices, got {list(self.score_stages)}")
        elif self.score_stages[0] < 0 or self.score_stages[-1] != self.n_stages - 1:
            found.append(f"score_stages must lie in 0..{self.n_stages - 1} and end with the last stage")
        return found

    @classmethod
    def from_topology(cls, topology: Topology, features: Sequence[int], preset: BlockRules) -> FCNPlan:
        n = topology.n_stages
        return cls(
            **topology_fields(topology, features),
            n_conv_per_stage=(preset.conv_per_stage_encoder,) * n,
            score_stages=tuple(range(max(0, n - 3), n)),
        )


AnyNetworkPlan = UNetPlan | ResEncUNetPlan | UNetPlusPlusPlan | DeepLabV3PlusPlan | SegFormerPlan | FCNPlan
#: architecture name -> its plan class
NETWORK_PLANS: dict[str, type[NetworkPlan]] = {
    cls.__dataclass_fields__["architecture"].default: cls  # type: ignore[misc]
    for cls in (UNetPlan, ResEncUNetPlan, UNetPlusPlusPlan, DeepLabV3PlusPlan, SegFormerPlan, FCNPlan)
}


def plan_class(architecture: str) -> type[NetworkPlan]:
    """The plan class of ``architecture``; a KeyError lists the known names."""
    try:
        return NETWORK_PLANS[architecture]
    except KeyError:
        raise KeyError(
            f"unknown architecture {architecture!r}; available: {', '.join(sorted(NETWORK_PLANS))}"
        ) from None


def network_plan_for(
    architecture: str, topology: Topology, features: Sequence[int], preset: BlockRules
) -> AnyNetworkPlan:
    """The plan of ``architecture`` for a topology the planner chose."""
    return plan_class(architecture).from_topology(topology, features, preset)  # type: ignore[return-value]


__all__ = [
    "AnyNetworkPlan",
    "BlockCounts",
    "BlockRules",
    "NNUNET_BLOCKS",
    "RESENC_BLOCKS_PER_STAGE",
    "DeepLabV3PlusPlan",
    "FCNPlan",
    "NETWORK_PLANS",
    "NetworkPlan",
    "ResEncUNetPlan",
    "SegFormerPlan",
    "UNetPlan",
    "UNetPlusPlusPlan",
    "network_plan_for",
    "plan_class",
]
