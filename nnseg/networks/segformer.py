"""SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021) in 3D and 2D, built from a :class:`~nnseg.networks.plans.SegFormerPlan`.

Encoder (Mix Transformer, MiT): per stage an overlapping patch embedding (a convolution with the stage's kernel
and stride, padding kernel // 2 per axis, then LayerNorm), ``depths[s]`` pre-norm blocks
``x + Attention(LN(x)); x + MixFFN(LN(x))`` and a final LayerNorm; tokens are ``(B, N, C)`` with ``N`` the voxels
of the stage's feature map. Efficient self-attention takes queries from every token and keys/values from the
map reduced by a convolution with kernel = stride = ``sr_ratios[s]`` (per axis) and LayerNorm, so the
attention matrix is ``N x N / prod(sr)``; it runs through ``scaled_dot_product_attention`` and reports its
matrix to the footprint trace (``extra_feature_map_elements``). Mix-FFN replaces positional encodings:
Linear(C -> mlp_ratio C), 3^d depthwise convolution, GELU, Linear(-> C). No positional embedding, no stochastic
depth (the paper's drop path 0.1 is left out), qkv with bias, LayerNorm eps 1e-6 in the blocks as the reference.

All-MLP decoder: per stage a Linear to ``decoder_features``, (tri/bi)linear upsampling to the first stage's
resolution, concatenation (deepest first, as the reference), a 1x1 fuse convolution + InstanceNorm (affine) +
ReLU, dropout 0.1, a 1x1 classifier (the segmentation head), and linear upsampling of the logits to the input.
The paper's BatchNorm is replaced by instance norm as everywhere in nnseg: nnU-Net batches hold 2 samples,
too few for batch statistics. One output, no deep supervision (``deep_supervision=True`` gives a one-element
list in training). Linear interpolation preserves constants, so the head's bias adds directly to the logits.

Init as the reference: Linear trunc_normal(std 0.02) with zero bias, LayerNorm 1/0, convolutions
normal(0, sqrt(2 / fan_out)) with fan_out = prod(kernel) x out_channels / groups and zero bias; the classifier
normal(0, 0.01) as mmsegmentation's decode heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.networks.blocks import check_plan
from nnseg.networks.plans import SegFormerPlan

LAYER_NORM_EPS = 1e-6  # MiT's norm_layer = partial(nn.LayerNorm, eps=1e-6)
DECODER_DROPOUT = 0.1  # mmsegmentation's SegFormerHead dropout_ratio


def _conv(dims: int) -> Callable[..., nn.Conv2d | nn.Conv3d]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _to_map(tokens: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, *spatial)`` feature map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *spatial)


def _to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """``(B, C, *spatial)`` feature map -> ``(B, N, C)`` tokens."""
    return feature_map.flatten(2).transpose(1, 2)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from the map reduced by ``sr_ratio`` per axis."""

    def __init__(self, dims: int, channels: int, num_heads: int, sr_ratio: Sequence[int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = tuple(sr_ratio)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        self.reduces = any(r > 1 for r in self.sr_ratio)
        if self.reduces:
            self.sr = _conv(dims)(channels, channels, kernel_size=self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)

    def key_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape of keys/values for a map of ``spatial`` (the reduction conv's output)."""
        return tuple(edge // r for edge, r in zip(spatial, self.sr_ratio)) if self.reduces else tuple(spatial)

    def forward(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        batch, n, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        q = self.q(x).reshape(batch, n, heads, head_dim).transpose(1, 2)
        source = self.norm(_to_tokens(self.sr(_to_map(x, spatial)))) if self.reduces else x
        kv = self.kv(source).reshape(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # scale head_dim ** -0.5 as the reference
        return self.proj(out.transpose(1, 2).reshape(batch, n, channels))

    def extra_feature_map_elements(self, inputs: tuple, output: torch.Tensor) -> int:
        """The attention matrix, batch x heads x queries x keys (the footprint trace adds it)."""
        x, spatial = inputs
        return x.shape[0] * self.num_heads * x.shape[1] * math.prod(self.key_shape(spatial))


class MixFFN(nn.Module):
    """Linear(C -> hidden), 3^d depthwise convolution on the map, GELU, Linear(hidden -> C)."""

    def __init__(self, dims: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = _conv(dims)(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        x = _to_tokens(self.dwconv(_to_map(self.fc1(x), spatial)))
        return self.fc2(self.act(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attention(LN(x))``, then ``x + MixFFN(LN(x))``."""

    def __init__(self, dims: int, channels: int, num_heads: int, sr_ratio: Sequence[int], mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.attn = EfficientSelfAttention(dims, channels, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.mlp = MixFFN(dims, channels, mlp_ratio * channels)

    def forward(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), spatial)  # positional: the footprint hook reads ``spatial``
        return x + self.mlp(self.norm2(x), spatial)


class EncoderStage(nn.Module):
    """Overlapping patch embedding (strided conv + LayerNorm), transformer blocks, final LayerNorm."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        depth: int,
        num_heads: int,
        sr_ratio: Sequence[int],
        mlp_ratio: int,
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.patch_embed = _conv(dims)(
            in_channels, channels, kernel_size=tuple(kernel_size), stride=tuple(stride), padding=padding
        )
        self.embed_norm = nn.LayerNorm(channels)  # the reference's OverlapPatchEmbed keeps eps 1e-5
        self.blocks = nn.ModuleList(
            TransformerBlock(dims, channels, num_heads, sr_ratio, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Normalised tokens ``(B, N, C)`` and the spatial shape of their map."""
        x = self.patch_embed(x)
        spatial = tuple(x.shape[2:])
        tokens = self.embed_norm(_to_tokens(x))
        for block in self.blocks:
            tokens = block(tokens, spatial)
        return self.norm(tokens), spatial


class SegFormer(nn.Module):
    """Mix Transformer encoder + all-MLP decoder; one logits tensor at the input's size."""

    def __init__(self, plan: SegFormerPlan, in_channels: int, num_classes: int, deep_supervision: bool = False) -> None:
        super().__init__()
        dims = len(plan.kernel_sizes[0])
        self.dims = dims
        self.deep_supervision = deep_supervision
        self.interpolation = "trilinear" if dims == 3 else "bilinear"
        self.stages = nn.ModuleList()
        channels = in_channels
        for s in range(plan.n_stages):
            self.stages.append(
                EncoderStage(
                    dims,
                    channels,
                    plan.features_per_stage[s],
                    plan.kernel_sizes[s],
                    plan.strides[s],
                    plan.depths[s],
                    plan.num_heads[s],
                    plan.sr_ratios[s],
                    plan.mlp_ratio,
                )
            )
            channels = plan.features_per_stage[s]
        width = plan.decoder_features
        self.decoder_mlps = nn.ModuleList(nn.Linear(features, width) for features in plan.features_per_stage)
        self.fuse = Convolution(
            dims,
            width * plan.n_stages,
            width,
            kernel_size=1,
            act="RELU",
            norm=("INSTANCE", {"affine": True, "eps": 1e-5}),
            dropout=DECODER_DROPOUT,
            dropout_dim=dims,  # channel dropout, as mmsegmentation's Dropout2d
            bias=False,  # a norm follows (mmcv's ConvModule drops the bias too)
            adn_ordering="NAD",
        )
        self.classifier = _conv(dims)(width, num_classes, kernel_size=1)
        self.apply(self._init_weights)
        nn.init.normal_(self.classifier.weight, std=0.01)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
            fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
            nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def segmentation_heads(self) -> list[nn.Module]:
        """The 1x1 classifier: the only head (its bias adds directly to the upsampled logits)."""
        return [self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        input_size = x.shape[2:]
        decoded: list[torch.Tensor] = []
        for stage, mlp in zip(self.stages, self.decoder_mlps):
            tokens, spatial = stage(x)
            x = _to_map(tokens, spatial)
            decoded.append(_to_map(mlp(tokens), spatial))
        target = decoded[0].shape[2:]
        upsampled = [
            f if f.shape[2:] == target else F.interpolate(f, size=target, mode=self.interpolation, align_corners=False)
            for f in decoded
        ]
        logits = self.classifier(self.fuse(torch.cat(upsampled[::-1], dim=1)))
        if logits.shape[2:] != input_size:
            logits = F.interpolate(logits, size=input_size, mode=self.interpolation, align_corners=False)
        if self.training and self.deep_supervision:
            return [logits]
        return logits


def build_segformer(
    plan: SegFormerPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None
) -> nn.Module:
    """A SegFormer matching ``plan``.

    Args:
        plan: the configuration's network plan (per-stage embedding kernels/strides, depths, heads, sr ratios).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: override the plan's flag; True only wraps the single output in a list in training.

    Raises:
        ValueError: the plan is inconsistent (the message names the field).
    """
    check_plan(plan, SegFormerPlan)
    if plan.dims not in (2, 3):
        raise ValueError(f"segformer plan: kernel_sizes must have 2 or 3 axes, got {plan.dims}")
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    return SegFormer(plan, in_channels, num_classes, deep_supervision=use_ds)
