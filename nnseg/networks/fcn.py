"""FCN-8s (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015),
built from an FCNPlan, in 2D or 3D.

- Encoder: per stage ``n_conv_per_stage[s]`` x (conv ``kernel_sizes[s]``, instance norm, leaky ReLU) to
  ``features_per_stage[s]`` channels. Stage s downsamples with a strided first convolution (``strides[s]``)
  rather than VGG's max pooling: the plan's topology (and the planner's footprint) is nnU-Net's, where the
  stride belongs to a convolution, and every nnseg network downsamples the same way. Instance norm replaces
  VGG's absent normalisation because nothing here starts from ImageNet weights.
- Score layers: a 1x1 convolution to the classes on each stage of ``score_stages`` (FCN-8s: the last three,
  the deepest playing fc7's role), zero-initialised as in the paper.
- Fusion, coarse to fine: the deeper fused score is upsampled by a learned transposed convolution (by the
  stride between the two stages, per axis) and added to the next score; the sum is upsampled to the input by
  the finest score stage's total stride (no final upsampling where that is 1 on every axis).
- Upsampling as in the paper: per axis factor f, kernel 2f - f % 2, stride f, padding ceil((f - 1) / 2)
  (the output is exactly f times the input), initialised to per-class bilinear interpolation; the fusion
  upsamplings have no bias (the paper's ``bias_term: false``).
- No deep supervision (training and eval return one tensor). The segmentation head (the module whose bias
  adds directly to the logits) is the final upsampling, or the finest score layer where there is none; every
  other bias starts at zero, so setting the head's bias to the log class prior sets the output's prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.networks.blocks import check_plan, he_init
from nnseg.networks.plans import FCNPlan


def build_fcn(plan: FCNPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None) -> FCN:
    """An FCN-8s-style network matching ``plan``.

    Args:
        plan: the configuration's network plan (kernel sizes and strides in planning order).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: accepted for the common builder signature; FCN has a single output.

    Raises:
        ValueError: the plan is inconsistent (the message names the field).
    """
    check_plan(plan, FCNPlan)
    return FCN(plan, in_channels, num_classes)


def upsampling_geometry(factor: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """FCN's learned-upsampling layer for a per-axis ``factor``: (kernel, padding) per axis."""
    return tuple(2 * f - f % 2 for f in factor), tuple(math.ceil((f - 1) / 2) for f in factor)


def bilinear_init_(layer: nn.ConvTranspose2d | nn.ConvTranspose3d) -> None:
    """Per-class bilinear interpolation weights (FCN's ``upsample_filt``, separable over the axes)."""
    weight = layer.weight
    with torch.no_grad():
        separable = torch.ones((), device=weight.device, dtype=weight.dtype)
        for size in layer.kernel_size:
            factor = (size + 1) // 2
            center = factor - 1 if size % 2 == 1 else factor - 0.5
            position = torch.arange(size, device=weight.device, dtype=weight.dtype)
            separable = separable.unsqueeze(-1) * (1 - (position - center).abs() / factor)
        weight.zero_()
        for channel in range(min(layer.in_channels, layer.out_channels)):
            weight[channel, channel] = separable
        if layer.bias is not None:
            layer.bias.zero_()


class FCN(nn.Module):
    """Convolutional encoder, score layers on ``score_stages``, fused coarse to fine by learned upsampling.

    Attributes:
        encoder: one block per stage.
        scores: 1x1 score convolutions, one per entry of ``score_stages`` (finest first).
        fuse_ups: ``fuse_ups[k]`` upsamples the fused score of ``score_stages[k+1..]`` to ``score_stages[k]``
            (identity where the two stages share a resolution).
        final_up: upsampling of the finest fused score to the input (None when its total stride is 1).
    """

    def __init__(self, plan: FCNPlan, in_channels: int, num_classes: int) -> None:
        super().__init__()
        dims = plan.dims
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.score_stages = tuple(plan.score_stages)
        self.encoder = nn.ModuleList()
        channels = in_channels
        for stage, features in enumerate(plan.features_per_stage):
            layers = [
                Convolution(
                    dims,
                    channels if index == 0 else features,
                    features,
                    strides=plan.strides[stage] if index == 0 else 1,
                    kernel_size=plan.kernel_sizes[stage],
                    act=("leakyrelu", {"negative_slope": plan.negative_slope, "inplace": True}),
                    norm=("instance", {"affine": True, "eps": 1e-5}),
                    bias=plan.conv_bias,
                )
                for index in range(plan.n_conv_per_stage[stage])
            ]
            self.encoder.append(nn.Sequential(*layers))
            channels = features
        self.apply(lambda module: he_init(module, plan.negative_slope))

        scores = [conv(plan.features_per_stage[s], num_classes, 1) for s in self.score_stages]
        for parameter in (p for score in scores for p in score.parameters()):
            nn.init.zeros_(parameter)  # the paper zero-initialises the score layers
        self.scores = nn.ModuleList(scores)
        self.fuse_ups = nn.ModuleList(
            _upsampling(plan, fine, coarse, num_classes, bias=False) or nn.Identity()
            for fine, coarse in zip(self.score_stages, self.score_stages[1:])
        )
        self.final_up = _upsampling(plan, -1, self.score_stages[0], num_classes, bias=True)

    def segmentation_heads(self) -> list[nn.Module]:
        """The module whose output is the logits and whose bias adds directly to them."""
        return [self.final_up if self.final_up is not None else self.scores[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = {}
        for stage, block in enumerate(self.encoder):
            x = block(x)
            if stage in self.score_stages:
                features[stage] = x
        fused = self.scores[-1](features[self.score_stages[-1]])
        for k in range(len(self.score_stages) - 2, -1, -1):
            fused = self.scores[k](features.pop(self.score_stages[k])) + self.fuse_ups[k](fused)
        return fused if self.final_up is None else self.final_up(fused)


def _upsampling(
    plan: FCNPlan, fine: int, coarse: int, num_classes: int, *, bias: bool
) -> nn.ConvTranspose2d | nn.ConvTranspose3d | None:
    """Learned upsampling from stage ``coarse`` to stage ``fine`` (-1: the input); None for factor 1 everywhere."""
    factor = tuple(math.prod(s[axis] for s in plan.strides[fine + 1 : coarse + 1]) for axis in range(plan.dims))
    if all(f == 1 for f in factor):
        return None
    kernel, padding = upsampling_geometry(factor)
    conv_transpose: Callable[..., nn.ConvTranspose2d | nn.ConvTranspose3d] = (
        nn.ConvTranspose3d if plan.dims == 3 else nn.ConvTranspose2d
    )
    layer = conv_transpose(num_classes, num_classes, kernel, factor, padding, bias=bias)
    bilinear_init_(layer)
    return layer
