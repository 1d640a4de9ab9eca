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

from typing import Any

import torch
from torch import nn

from nnseg.networks.blocks import ResidualBlock, check_plan, conv_norm_act, he_init
from nnseg.networks.plans import ResEncUNetPlan


class ResEncUNet(nn.Module):
    """Residual encoder, plain U-Net decoder, 1x1 heads (see the module docstring)."""

    def __init__(self, plan: ResEncUNetPlan, in_channels: int, num_classes: int, *, deep_supervision: bool) -> None:
        super().__init__()
        dims, slope, bias = plan.dims, plan.negative_slope, plan.conv_bias
        features, n = plan.features_per_stage, plan.n_stages
        self.stem = conv_norm_act(
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
                conv_norm_act(
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
        self.apply(lambda m: he_init(m, slope))

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
    check_plan(plan, ResEncUNetPlan)
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    return ResEncUNet(plan, in_channels, num_classes, deep_supervision=use_ds)
