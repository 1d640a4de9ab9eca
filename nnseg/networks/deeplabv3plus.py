"""3D/2D DeepLabV3+ built from a :class:`~nnseg.networks.plans.DeepLabV3PlusPlan`.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation" (ECCV 2018),
on DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017):

- Encoder: nnU-Net's residual encoder (ResEnc): a stem (conv, instance norm, leaky ReLU) to
  ``features_per_stage[0]``, then per stage ``n_blocks_per_stage[s]`` basic residual blocks (conv-norm-act,
  conv-norm, add the shortcut, act; nnU-Net's BasicBlockD shortcut: average pooling when the block strides,
  1x1 conv + norm when the channels change). Stages past ``output_stride`` keep stride 1 and dilate all their
  convolutions by the stride they skip (atrous convolution, ``plan.dilations()``; padding = dilation x
  (kernel // 2) per axis; an axis with kernel 1 keeps dilation 1, where dilation has no effect).
- ASPP (DeepLabV3 Sec. 3.3) on the last stage: a 1x1 branch, one 3x3 branch per entry of ``aspp_rates``
  (per-axis dilation; kernel 1 along an axis where the last stage's kernel is 1), and image-level features
  (global average pooling, 1x1 conv, act, broadcast back), each to ``aspp_features`` channels; concatenated,
  projected by a 1x1 conv (+ norm, act) and dropout 0.1 (the paper's training setting). The image-pooling
  branch has no norm: instance norm of a 1x1x1 map is degenerate (every value normalises to 0) and batch
  norm is not nnU-Net's recipe, so its convolution keeps a bias instead.
- Decoder (DeepLabV3+ Sec. 3.1): the ASPP output is upsampled (tri/bilinear, align_corners=False) to the
  resolution of encoder stage ``low_level_stage``, whose features are projected by a 1x1 conv (+ norm, act)
  to ``low_level_features``; both are concatenated and refined by two 3x3 conv-norm-act of
  ``decoder_features`` (kernel per axis as the planner chose for that stage); a 1x1 classifier (the
  segmentation head) gives logits that are upsampled to the input. Interpolation sizes come from the
  actual tensors, so anisotropic patches with thick-slice axes work.

The paper's depthwise-separable convolutions (Xception backbone) are not used: the encoder is nnU-Net's and
all convolutions are dense. There is one output: with deep supervision on, training returns a list holding
only the full-resolution logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.networks.blocks import ResidualBlock, check_plan, he_init
from nnseg.networks.plans import DeepLabV3PlusPlan, NetworkPlan

#: dropout after the ASPP projection during training (DeepLabV3/V3+ reference implementation: keep_prob 0.9)
ASPP_DROPOUT = 0.1


def build_deeplabv3plus(
    plan: NetworkPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None
) -> DeepLabV3Plus:
    """A DeepLabV3+ matching ``plan``.

    Args:
        plan: a DeepLabV3PlusPlan (kernel sizes and strides in planning order).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: override the plan's flag (False for inference); on, training returns ``[logits]``.

    Raises:
        TypeError: ``plan`` is not a DeepLabV3PlusPlan.
        ValueError: the plan is inconsistent (the message names the field).
    """
    plan = check_plan(plan, DeepLabV3PlusPlan)
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    return DeepLabV3Plus(plan, in_channels, num_classes, deep_supervision=use_ds)


class _Blocks:
    """Factory of conv(-norm(-act)) units with the plan's building blocks."""

    def __init__(self, dims: int, negative_slope: float, conv_bias: bool) -> None:
        self.dims = dims
        self.conv_bias = conv_bias
        self.norm = ("INSTANCE", {"affine": True, "eps": 1e-5})
        self.act = ("leakyrelu", {"negative_slope": negative_slope, "inplace": True})

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int] | int,
        *,
        stride: Sequence[int] | int = 1,
        dilation: Sequence[int] | int = 1,
        act: bool = True,
        norm: bool = True,
        bias: bool | None = None,
    ) -> Convolution:
        """Conv (padding dilation * (kernel // 2) per axis), then instance norm and leaky ReLU if asked."""
        return Convolution(
            self.dims,
            in_channels,
            out_channels,
            strides=stride,
            kernel_size=kernel,
            dilation=dilation,
            norm=self.norm if norm else None,
            act=self.act if act else None,
            bias=self.conv_bias if bias is None else bias,
        )


class ImagePooling(nn.Module):
    """ASPP's image-level features: global average pool, 1x1 conv (with bias, no norm), act, broadcast back."""

    def __init__(self, blocks: _Blocks, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = blocks.conv(in_channels, out_channels, 1, norm=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        return self.conv(pooled).expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 branch, one 3x3 branch per rate, image pooling; 1x1 projection."""

    def __init__(
        self,
        blocks: _Blocks,
        in_channels: int,
        out_channels: int,
        rates: Sequence[Sequence[int]],
        kernel: Sequence[int],
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [blocks.conv(in_channels, out_channels, 1)]
        for rate in rates:
            dilation = [r if k > 1 else 1 for r, k in zip(rate, kernel)]
            branches.append(blocks.conv(in_channels, out_channels, kernel, dilation=dilation))
        branches.append(ImagePooling(blocks, in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = blocks.conv(len(branches) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(ASPP_DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([branch(x) for branch in self.branches], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (see the module docstring): residual atrous encoder, ASPP, low-level decoder, one head.

    Attributes:
        stem, stages: the encoder (``stages[s]`` holds stage s's residual blocks).
        aspp: atrous spatial pyramid pooling on the last stage.
        low_level: 1x1 projection of stage ``low_level_stage``'s features.
        decoder: two conv-norm-act after the concatenation.
        classifier: the 1x1 segmentation head.
    """

    def __init__(self, plan: DeepLabV3PlusPlan, in_channels: int, num_classes: int, *, deep_supervision: bool) -> None:
        super().__init__()
        dims = plan.dims
        self.deep_supervision = deep_supervision
        self.low_level_stage = plan.low_level_stage
        self.mode = "trilinear" if dims == 3 else "bilinear"
        blocks = _Blocks(dims, plan.negative_slope, plan.conv_bias)
        features = plan.features_per_stage
        self.stem = blocks.conv(in_channels, features[0], plan.kernel_sizes[0])
        stages = []
        channels = features[0]
        for s, (stride, dilation) in enumerate(plan.dilations()):
            kernel = plan.kernel_sizes[s]
            dilation = tuple(d if k > 1 else 1 for d, k in zip(dilation, kernel))
            stage = []
            for b in range(plan.n_blocks_per_stage[s]):
                first = b == 0
                block_stride = stride if first else (1,) * dims
                stage.append(
                    ResidualBlock(
                        dims,
                        channels,
                        features[s],
                        kernel,
                        block_stride,
                        bias=plan.conv_bias,
                        negative_slope=plan.negative_slope,
                        dilation=dilation,
                    )
                )
                channels = features[s]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        last_kernel = tuple(3 if k > 1 else 1 for k in plan.kernel_sizes[-1])
        self.aspp = ASPP(blocks, features[-1], plan.aspp_features, plan.aspp_rates, last_kernel)
        self.low_level = blocks.conv(features[plan.low_level_stage], plan.low_level_features, 1)
        decoder_kernel = tuple(3 if k > 1 else 1 for k in plan.kernel_sizes[plan.low_level_stage])
        fused = plan.aspp_features + plan.low_level_features
        self.decoder = nn.Sequential(
            blocks.conv(fused, plan.decoder_features, decoder_kernel),
            blocks.conv(plan.decoder_features, plan.decoder_features, decoder_kernel),
        )
        self.classifier = (
            nn.Conv2d(plan.decoder_features, num_classes, 1)
            if dims == 2
            else nn.Conv3d(plan.decoder_features, num_classes, 1)
        )
        self.apply(lambda module: he_init(module, plan.negative_slope))

    def segmentation_heads(self) -> list[nn.Module]:
        """The convolution that produces the logits (the only output)."""
        return [self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        x = self.stem(x)
        low_level = x
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s == self.low_level_stage:
                low_level = x
        x = self.aspp(x)
        low_level = self.low_level(low_level)
        if x.shape[2:] != low_level.shape[2:]:
            x = F.interpolate(x, size=low_level.shape[2:], mode=self.mode, align_corners=False)
        x = self.decoder(torch.cat([x, low_level], dim=1))
        logits = self.classifier(x)
        if logits.shape[2:] != size:
            logits = F.interpolate(logits, size=size, mode=self.mode, align_corners=False)
        if self.training and self.deep_supervision:
            return [logits]
        return logits
