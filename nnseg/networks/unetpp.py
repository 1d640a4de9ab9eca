"""UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture", DLMIA 2018; "UNet++: Redesigning Skip
Connections to Exploit Multiscale Features in Image Segmentation", IEEE TMI 2019), built from a UNetPlusPlusPlan.

Nodes X[i][j], depth i = 0..n-1, column j = 0..n-1-i:

- X[i][0] is the encoder (nnU-Net's blocks): ``n_conv_per_stage[i]`` x (conv ``kernel_sizes[i]``, instance
  norm, leaky ReLU) to ``features_per_stage[i]`` channels, the first convolution carrying ``strides[i]``.
- X[i][j], j >= 1, convolves the dense skip concatenation [X[i][0], ..., X[i][j-1], Up(X[i+1][j-1])] with the
  same block (stride 1); Up is a learned transposed convolution with kernel = stride = ``strides[i+1]`` to
  ``features_per_stage[i]`` channels (nnU-Net's decoder upsampling; the papers use one upsampling per node).
- Deep supervision: a 1x1 head on every top node X[0][1..n-1], all at full resolution. The training list
  is [X[0][n-1], X[0][n-2], ..., X[0][1]] so that the loss's 1/2^k weights favour the full network.
- Model pruning (the papers' inference speed-up, enabled by deep supervision): ``prune_level`` L keeps, in
  eval mode, only the sub-network under X[0][L] (nodes with i + j <= L) and returns head L. The deeper nodes
  are never run, so a pruned forward costs (and is traced as) the smaller network.

Without deep supervision only one head exists (X[0][n-1]'s); a pruned eval applies it to X[0][L], which is
only meaningful for weights trained with deep supervision (as in the papers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from monai.networks.blocks import Convolution
from torch import nn

from nnseg.networks.blocks import check_plan, he_init
from nnseg.networks.plans import UNetPlusPlusPlan


def build_unetpp(
    plan: UNetPlusPlusPlan, in_channels: int, num_classes: int, *, deep_supervision: bool | None = None
) -> UNetPlusPlus:
    """A UNet++ matching ``plan``.

    Args:
        plan: the configuration's network plan (kernel sizes and strides in planning order).
        in_channels: input channels.
        num_classes: output channels (one per label, background included).
        deep_supervision: override the plan's flag (inference turns it off).

    Raises:
        ValueError: the plan is inconsistent (the message names the field).
    """
    check_plan(plan, UNetPlusPlusPlan)
    use_ds = plan.deep_supervision if deep_supervision is None else deep_supervision
    return UNetPlusPlus(plan, in_channels, num_classes, deep_supervision=use_ds)


def conv_block(plan: UNetPlusPlusPlan, depth: int, in_channels: int, stride: tuple[int, ...]) -> nn.Sequential:
    """``n_conv_per_stage[depth]`` x (conv, instance norm, leaky ReLU); the first convolution carries ``stride``."""
    features = plan.features_per_stage[depth]
    layers = []
    for index in range(plan.n_conv_per_stage[depth]):
        layers.append(
            Convolution(
                plan.dims,
                in_channels if index == 0 else features,
                features,
                strides=stride if index == 0 else 1,
                kernel_size=plan.kernel_sizes[depth],
                act=("leakyrelu", {"negative_slope": plan.negative_slope, "inplace": True}),
                norm=("instance", {"affine": True, "eps": 1e-5}),
                bias=plan.conv_bias,
            )
        )
    return nn.Sequential(*layers)


class UNetPlusPlus(nn.Module):
    """UNet++ with dense nested skips, deep supervision on the top nodes and inference-time pruning.

    Attributes:
        nodes: ``nodes[i][j]`` is the convolution block of X[i][j] (``nodes[i][0]`` the encoder stage).
        ups: ``ups[i][j - 1]`` upsamples X[i+1][j-1] for X[i][j].
        heads: with deep supervision ``heads[j - 1]`` is X[0][j]'s 1x1 head (j = 1..n-1); without, one head.
        prune_level: the column L whose top node X[0][L] is the eval output.
    """

    def __init__(self, plan: UNetPlusPlusPlan, in_channels: int, num_classes: int, *, deep_supervision: bool) -> None:
        super().__init__()
        n, dims = plan.n_stages, plan.dims
        features = plan.features_per_stage
        self.deep_supervision = deep_supervision
        self.n_stages = n
        self.prune_level = n - 1 if plan.prune_level is None else plan.prune_level
        self.strides = plan.strides
        self.features = features
        conv_transpose: Callable[..., nn.Module] = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        conv: Callable[..., nn.Module] = nn.Conv3d if dims == 3 else nn.Conv2d

        self.nodes = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList([conv_block(plan, i, in_channels if i == 0 else features[i - 1], plan.strides[i])])
            ups = nn.ModuleList()
            for j in range(1, n - i):
                stride = plan.strides[i + 1]
                ups.append(conv_transpose(features[i + 1], features[i], stride, stride, bias=plan.conv_bias))
                row.append(conv_block(plan, i, (j + 1) * features[i], (1,) * dims))
            self.nodes.append(row)
            self.ups.append(ups)
        n_heads = n - 1 if deep_supervision else 1
        self.heads = nn.ModuleList(conv(features[0], num_classes, 1) for _ in range(n_heads))
        self.apply(lambda module: he_init(module, plan.negative_slope))

    def segmentation_heads(self) -> list[nn.Module]:
        """The 1x1 convolutions producing the training outputs, in their order: X[0][n-1]'s first."""
        return list(reversed(self.heads)) if self.deep_supervision else list(self.heads)

    def head_for(self, column: int) -> nn.Module:
        """The head applied to the top node X[0][column]."""
        return self.heads[column - 1] if self.deep_supervision else self.heads[0]

    def node(self, depth: int, column: int) -> nn.Module:
        """The convolution block of X[depth][column]."""
        return cast(nn.ModuleList, self.nodes[depth])[column]

    def up(self, depth: int, column: int) -> nn.Module:
        """The upsampling of X[depth+1][column-1] for X[depth][column]."""
        return cast(nn.ModuleList, self.ups[depth])[column - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        depth = self.n_stages - 1 if self.training else self.prune_level
        top = self.compute_top_nodes(x, depth)
        if self.training and self.deep_supervision:
            return [self.head_for(j)(top[j - 1]) for j in range(depth, 0, -1)]
        return self.head_for(depth)(top[-1])

    def extra_feature_map_elements(self, inputs: tuple, output: torch.Tensor) -> int:
        """The dense concatenations beyond a plain U-Net's (which the memory reference already covers): node
        X[i][j] keeps (j + 1) x features_i channels for backward where a U-Net decoder keeps 2 x; the footprint
        counts the difference, (j - 1) x features_i x voxels_i, for the columns this forward ran."""
        depth = self.n_stages - 1 if self.training else self.prune_level
        size = list(inputs[0].shape[2:])
        total = 0
        for i in range(depth + 1):
            size = [edge // stride for edge, stride in zip(size, self.strides[i])]
            for j in range(2, depth - i + 1):
                total += (j - 1) * self.features[i] * math.prod(size)
        return total * inputs[0].shape[0]

    def compute_top_nodes(self, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
        """X[0][1..depth], computing only the nodes X[i][j] with i + j <= depth (the sub-network under X[0][depth])."""
        # rows[i] holds X[i][0..]; a row is released once no later node reads it (matters without autograd)
        rows: list[list[torch.Tensor]] = []
        for i in range(depth + 1):
            x = self.node(i, 0)(x)
            rows.append([x])
        top = []
        for j in range(1, depth + 1):
            for i in range(depth - j + 1):
                upsampled = self.up(i, j)(rows[i + 1][j - 1])
                rows[i].append(self.node(i, j)(torch.cat([*rows[i], upsampled], dim=1)))
                del upsampled
            rows[depth - j + 1] = []  # X[depth-j+1][*] fed only X[depth-j][j], just computed
            top.append(rows[0][j])
        return top
