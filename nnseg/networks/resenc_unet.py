"""nnU-Net's residual-encoder U-Net (Isensee et al. 2024, "nnU-Net Revisited"; ResEnc M/L/XL presets).

The network of ``dynamic_network_architectures``' ResidualEncoderUNet, built from a :class:`ResEncUNetPlan`:

- encoder: a stem (conv, instance norm, leaky ReLU) to ``features_per_stage[0]`` at stride 1, then per stage
  ``n_blocks_per_stage[s]`` ResNet-D basic blocks (He et al. 2019, "Bag of tricks"): conv(k, stride)-norm-act,
  conv(k)-norm, plus a shortcut, then act. The first block of stage s carries ``strides[s]``; its shortcut
  average-pools by the stride and, where the channels change, projects with a 1x1 conv (no bias) and a norm.
  The last norm of every block starts at zero (nnU-Net's ``init_last_bn_before_add_to_0``): each block
  starts as its shortcut.
- decoder: the plain U-Net decoder: transposed conv (kernel = stride), skip concatenation,
  ``n_conv_per_stage_decoder`` (conv, norm, act) per stage, a 1x1 segmentation head.
- deep supervision (training only): heads on every decoder level but the lowest (nnU-Net builds that one but
  weights it 0), highest resolution first. Only the heads in use are built.

:func:`resenc_footprint` is the closed form the planner uses: its feature-map count equals nnU-Net's
``ResidualEncoderUNet.compute_conv_feature_map_size`` (which also counts the pooled shortcut of a block that
only strides), so the ResEnc plans equal nnU-Net's to the voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.planning.footprint import Footprint
from nnseg.planning.network_plans import ResEncUNetPlan

_NORM = ("instance", {"affine": True, "eps": 1e-5})


def _conv_norm_act(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel: Sequence[int] | int,
    stride: Sequence[int] | int,
    *,
    bias: bool,
    negative_slope: float | None,
) -> Convolution:
    """Conv ('same' padding), instance norm, and leaky ReLU unless ``negative_slope`` is None."""
    act = None if negative_slope is None else ("leakyrelu", {"negative_slope": negative_slope, "inplace": True})
    return Convolution(
        dims, in_channels, out_channels, strides=stride, kernel_size=kernel, act=act, norm=_NORM, bias=bias
    )


class ResidualBlock(nn.Module):
    """ResNet-D basic block: conv-norm-act, conv-norm, + shortcut (avg-pool if strided, 1x1 projection if the
    channels change), act."""

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
    ) -> None:
        super().__init__()
        self.conv1 = _conv_norm_act(
            dims, in_channels, out_channels, kernel, stride, bias=bias, negative_slope=negative_slope
        )
        self.conv2 = _conv_norm_act(dims, out_channels, out_channels, kernel, 1, bias=bias, negative_slope=None)
        strided = any(s != 1 for s in stride)
        shortcut: list[nn.Module] = []
        if strided:
            pool = nn.AvgPool3d if dims == 3 else nn.AvgPool2d
            window: Any = tuple(stride)  # per axis; torch's stubs want a fixed-length tuple
            shortcut.append(pool(kernel_size=window, stride=window))
        if in_channels != out_channels:
            shortcut.append(_conv_norm_act(dims, in_channels, out_channels, 1, 1, bias=False, negative_slope=None))
        self.shortcut = nn.Sequential(*shortcut)  # empty: identity
        #: nnU-Net counts the shortcut's output even when it is only pooled (no conv): see the footprint
        self.pooled_shortcut_only = strided and in_channels == out_channels
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def last_norm(self) -> nn.Module:
        """The norm before the addition (nnU-Net zero-initialises it)."""
        return cast(nn.Module, cast(nn.Module, self.conv2.adn).N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))

    def extra_feature_map_elements(self, inputs: tuple, output: torch.Tensor) -> int:
        """The pooled shortcut nnU-Net's measure counts although no convolution produces it."""
        return output.numel() if self.pooled_shortcut_only else 0


class ResEncUNet(nn.Module):
    """Residual encoder, plain U-Net decoder, 1x1 heads (see the module docstring)."""

    def __init__(self, plan: ResEncUNetPlan, in_channels: int, num_classes: int, *, deep_supervision: bool) -> None:
        super().__init__()
        dims, slope, bias = plan.dims, plan.negative_slope, plan.conv_bias
        features, n = plan.features_per_stage, plan.n_stages
        self.stem = _conv_norm_act(
            dims, in_channels, features[0], plan.kernel_sizes[0], 1, bias=bias, negative_slope=slope
        )
        stages = []
        channels = features[0]
        for s in range(n):
            blocks = []
            for b in range(plan.n_blocks_per_stage[s]):
                stride = plan.strides[s] if b == 0 else (1,) * dims
                blocks.append(
                    ResidualBlock(
                        dims, channels, features[s], plan.kernel_sizes[s], stride, bias=bias, negative_slope=slope
                    )
                )
                channels = features[s]
            stages.append(nn.Sequential(*blocks))
        self.encoder = nn.ModuleList(stages)

        transposed = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        ups, decoder = [], []
        for step in range(n - 1):  # from the bottleneck up: decoder step `step` ends at encoder stage n-2-step
            stage = n - 2 - step
            up_stride: Any = tuple(plan.strides[stage + 1])  # kernel = stride
            ups.append(transposed(features[stage + 1], features[stage], up_stride, up_stride, bias=bias))
            convs = [
                _conv_norm_act(
                    dims,
                    2 * features[stage] if i == 0 else features[stage],
                    features[stage],
                    plan.kernel_sizes[stage],
                    1,
                    bias=bias,
                    negative_slope=slope,
                )
                for i in range(plan.n_conv_per_stage_decoder[step])
            ]
            decoder.append(nn.Sequential(*convs))
        self.upsamples = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(decoder)
        self.deep_supervision = deep_supervision
        n_heads = max(1, n - 2) if deep_supervision else 1
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        # heads[i] reads the decoder output at encoder stage i: highest resolution first
        self.heads = nn.ModuleList(conv(features[i], num_classes, 1) for i in range(n_heads))
        self.apply(lambda m: _init(m, slope))

    def segmentation_heads(self) -> list[nn.Module]:
        """The 1x1 convolutions producing the logits, in the order of the training outputs."""
        return list(self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for encoder_stage in self.encoder:
            x = encoder_stage(x)
            skips.append(x)
        supervise = self.training and self.deep_supervision
        outputs: list[torch.Tensor] = []
        n = len(skips)
        for step, (up, convs) in enumerate(zip(self.upsamples, self.decoder)):
            stage = n - 2 - step
            x = convs(torch.cat((up(x), skips[stage]), dim=1))
            if supervise and stage < len(self.heads):
                outputs.append(self.heads[stage](x))
        if not supervise:
            return self.heads[0](x)
        return outputs[::-1]


def _init(module: nn.Module, negative_slope: float) -> None:
    """He initialisation as nnU-Net (kaiming normal, a = slope, zero bias); a block's last norm starts at zero."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ResidualBlock):
        for parameter in module.last_norm().parameters():
            nn.init.zeros_(parameter)


def build_resenc_unet(
    plan: ResEncUNetPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None
) -> nn.Module:
    """The residual-encoder U-Net of ``plan``.

    Args:
        plan: the configuration's network plan (kernel sizes and strides in planning order).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: override the plan's flag (inference turns it off).

    Raises:
        ValueError: the plan is inconsistent, or has fewer than 2 stages (``n_stages``: a U-Net needs a decoder).
    """
    _check(plan)
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    return ResEncUNet(plan, in_channels, num_classes, deep_supervision=use_ds)


def _check(plan: ResEncUNetPlan) -> None:
    problems = plan.problems()
    if problems:
        raise ValueError(f"resenc_unet plan: {problems[0]}")
    if plan.n_stages < 2:
        raise ValueError(f"resenc_unet plan: n_stages must be >= 2 (a decoder needs a skip), got {plan.n_stages}")


def resenc_footprint(plan: ResEncUNetPlan, patch_size: Sequence[int], in_channels: int, num_classes: int) -> Footprint:
    """Feature-map elements (nnU-Net's ``compute_conv_feature_map_size``), forward FLOPs and parameters of the
    network with deep supervision off, in closed form (no torch)."""
    _check(plan)
    features, n, bias = plan.features_per_stage, plan.n_stages, int(plan.conv_bias)
    voxels = flops = 0
    params = 0
    size = list(patch_size)
    kernel = math.prod(plan.kernel_sizes[0])
    voxels += features[0] * math.prod(size)  # stem
    flops += 2 * kernel * in_channels * features[0] * math.prod(size)
    params += kernel * in_channels * features[0] + (bias + 2) * features[0]
    channels = features[0]
    stage_sizes = []
    for s in range(n):
        kernel, f = math.prod(plan.kernel_sizes[s]), features[s]
        strided = any(st != 1 for st in plan.strides[s])
        size = [edge // st for edge, st in zip(size, plan.strides[s])]
        stage_sizes.append(math.prod(size))
        out = f * stage_sizes[-1]
        for b in range(plan.n_blocks_per_stage[s]):
            voxels += 2 * out  # conv1, conv2
            flops += 2 * kernel * (channels + f) * out
            params += kernel * (channels + f) * f + 2 * (bias + 2) * f
            if b == 0 and (strided or channels != f):
                voxels += out  # nnU-Net counts the shortcut's output, pooled or projected
            if channels != f:
                flops += 2 * channels * out
                params += channels * f + 2 * f  # 1x1 projection (no bias) + norm
            channels = f
    for step in range(n - 1):
        stage = n - 2 - step
        f, vox = features[stage], stage_sizes[stage]
        kernel = math.prod(plan.kernel_sizes[stage])
        up = math.prod(plan.strides[stage + 1]) * features[stage + 1] * f
        voxels += f * vox  # transposed conv
        flops += 2 * features[stage + 1] * f * vox  # input voxels x kernel voxels = vox
        params += up + bias * f
        channels = 2 * f
        for _ in range(plan.n_conv_per_stage_decoder[step]):
            voxels += f * vox
            flops += 2 * kernel * channels * f * vox
            params += kernel * channels * f + (bias + 2) * f
            channels = f
    voxels += num_classes * stage_sizes[0]  # the full-resolution head
    flops += 2 * features[0] * num_classes * stage_sizes[0]
    params += (features[0] + 1) * num_classes
    return Footprint(float(voxels), float(flops), params)
