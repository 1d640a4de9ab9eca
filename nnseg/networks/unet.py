"""The plain 3D/2D U-Net of nnU-Net, as MONAI's DynUNet configured from a UNetPlan.

DynUNet with ``res_block=False`` is exactly the plan's network: per stage two
(conv, instance norm with affine, leaky ReLU 0.01) blocks, the first carrying the
stage's stride; transposed-conv upsampling with kernel = stride; skip concatenation;
1x1 segmentation heads (deep supervision on the upper decoder levels).

Output contract (every architecture): in training with deep supervision a list of logits, highest
resolution first, each head at its own decoder resolution (nnU-Net's layout: the loss downsamples the
target instead of upsampling the heads); otherwise, and always in eval mode, one tensor.
"""

from __future__ import annotations

import torch
from monai.networks.blocks.dynunet_block import UnetUpBlock
from monai.networks.nets import DynUNet
from torch import nn

from nnseg.networks.plans import UNetPlan


def build_unet(
    plan: UNetPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None
) -> nn.Module:
    """A DynUNet matching ``plan``.

    Args:
        plan: the configuration's network plan (kernel sizes and strides in planning order).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: override the plan's flag (inference turns it off).
    """
    if set(plan.n_conv_per_stage) != {2} or set(plan.n_conv_per_stage_decoder) - {2}:
        raise ValueError(
            "the DynUNet builder supports 2 convolutions per stage; got "
            f"{plan.n_conv_per_stage} / {plan.n_conv_per_stage_decoder}"
        )
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    # nnU-Net supervises every decoder level but the lowest; with fewer than 4 stages that leaves only the top one
    use_ds = use_ds and plan.n_stages >= 4
    dims = len(plan.kernel_sizes[0])
    return PlainUNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=[list(k) for k in plan.kernel_sizes],
        strides=[list(s) for s in plan.strides],
        upsample_kernel_size=[list(s) for s in plan.strides[1:]],
        filters=list(plan.features_per_stage),
        norm_name=("INSTANCE", {"affine": True, "eps": 1e-5}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": plan.negative_slope}),
        deep_supervision=use_ds,
        deep_supr_num=plan.n_stages - 3 if use_ds else 1,
        res_block=False,
        trans_bias=plan.conv_bias,
    )


class PlainUNet(DynUNet):
    """DynUNet whose deep-supervision outputs stay at their own resolution (a list, highest first), and whose
    decoder convolutions use the kernel of the stage they decode (nnU-Net's PlainConvUNet; DynUNet takes the
    kernel of the stage below, which differs on anisotropic plans: (3, 3, 3) where nnU-Net has (1, 3, 3))."""

    def get_upsamples(self) -> nn.ModuleList:
        inp, out = self.filters[1:][::-1], self.filters[:-1][::-1]
        return self.get_module_list(
            inp,  # type: ignore[arg-type]
            out,  # type: ignore[arg-type]
            self.kernel_size[:-1][::-1],
            self.strides[1:][::-1],
            UnetUpBlock,  # type: ignore[arg-type]
            self.upsample_kernel_size[::-1],
            trans_bias=self.trans_bias,
        )

    def segmentation_heads(self) -> list[nn.Module]:
        """The convolutions that produce logits: the output block and each deep-supervision head."""
        heads = [self.output_block, *(self.deep_supervision_heads if self.deep_supervision else [])]
        return [head.conv.conv for head in heads]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.output_block(self.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.heads]
        return out
