"""Building blocks the convolutional networks share: nnU-Net's conv-norm-act unit, its residual block, its
weight initialisation, and the plan check every builder runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import torch
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.networks.plans import NetworkPlan

PlanT = TypeVar("PlanT", bound=NetworkPlan)
#: nnU-Net's normalization: instance norm with affine parameters
INSTANCE_NORM = ("instance", {"affine": True, "eps": 1e-5})


def check_plan(plan: NetworkPlan, expected: type[PlanT]) -> PlanT:
    """``plan`` as ``expected``; a plan of another architecture raises a TypeError, an inconsistent one a
    ValueError naming the field."""
    if not isinstance(plan, expected):
        raise TypeError(f"{expected.__name__} expected, got {type(plan).__name__}")
    problems = plan.problems()
    if problems:
        raise ValueError(f"{plan.architecture} plan: {problems[0]}")
    return plan


def conv_norm_act(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel: Sequence[int] | int,
    stride: Sequence[int] | int = 1,
    *,
    bias: bool,
    negative_slope: float | None,
    dilation: Sequence[int] | int = 1,
) -> Convolution:
    """Conv ('same' padding, dilated if asked), instance norm, and leaky ReLU unless ``negative_slope`` is None."""
    act = None if negative_slope is None else ("leakyrelu", {"negative_slope": negative_slope, "inplace": True})
    return Convolution(
        dims,
        in_channels,
        out_channels,
        strides=stride,
        kernel_size=kernel,
        dilation=dilation,
        act=act,
        norm=INSTANCE_NORM,
        bias=bias,
    )


class ResidualBlock(nn.Module):
    """nnU-Net's BasicBlockD (ResNet-D): conv-norm-act, conv-norm, + shortcut (average pool when strided, 1x1
    projection without bias + norm when the channels change), act; optionally dilated (atrous)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        *,
        bias: bool,
        negative_slope: float,
        dilation: Sequence[int] | int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(
            dims, in_channels, out_channels, kernel, stride, bias=bias, negative_slope=negative_slope, dilation=dilation
        )
        self.conv2 = conv_norm_act(
            dims, out_channels, out_channels, kernel, 1, bias=bias, negative_slope=None, dilation=dilation
        )
        strided = any(s != 1 for s in stride)
        shortcut: list[nn.Module] = []
        if strided:
            pool = nn.AvgPool3d if dims == 3 else nn.AvgPool2d
            window: Any = tuple(stride)  # per axis; torch's stubs want a fixed-length tuple
            shortcut.append(pool(kernel_size=window, stride=window))
        if in_channels != out_channels:
            shortcut.append(conv_norm_act(dims, in_channels, out_channels, 1, 1, bias=False, negative_slope=None))
        self.shortcut = nn.Sequential(*shortcut)  # empty: identity
        #: nnU-Net counts the shortcut's output even when it is only pooled (no conv): see the footprint
        self.pooled_shortcut_only = strided and in_channels == out_channels
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def last_norm(self) -> nn.Module:
        """The norm before the addition (nnU-Net zero-initialises it, so a block starts as its shortcut)."""
        return cast(nn.Module, cast(nn.Module, self.conv2.adn).N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))

    def extra_feature_map_elements(self, inputs: tuple, output: torch.Tensor) -> int:
        """The pooled shortcut nnU-Net's measure counts although no convolution produces it."""
        return output.numel() if self.pooled_shortcut_only else 0


def he_init(module: nn.Module, negative_slope: float) -> None:
    """nnU-Net's InitWeights_He for ``module.apply``: kaiming normal (a = slope) for (transposed) convolutions,
    zero biases; a residual block's last norm starts at zero."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ResidualBlock):
        for parameter in module.last_norm().parameters():
            nn.init.zeros_(parameter)
