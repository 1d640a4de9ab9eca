"""Dice + cross-entropy with deep supervision, nnU-Net's training loss, from MONAI's DiceCELoss.

Soft Dice over the foreground classes (background excluded), optionally pooled over the
batch ("batch Dice", as planned for 3D), smooth 1e-5, plus cross-entropy, weights 1:1.
With deep supervision the network returns a list of logits, one per decoder level, highest
resolution first, each at its own resolution; as in nnU-Net the target is downsampled to each
(nearest neighbour) and level ``i`` gets weight ``1 / 2**i``, normalized to sum to 1 (the lowest
decoder level has no head at all, which is nnU-Net's weight 0).
Measured against upsampling the heads to the patch (``benchmarks/deep_supervision.py``).

``class_weights`` weigh each voxel's cross-entropy by its true class (a weighted mean), and
``topk_percent`` replaces the cross-entropy's mean over all voxels by the mean over the hardest
``k`` % (nnU-Net's ``DiceTopK10`` loss variant): voxels of a structure of 30 voxels in a patch of
100,000 otherwise weigh 0.03 % of the term, and once the network predicts background there the
softmax saturates and the Dice term's gradient vanishes with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def deep_supervision_weights(levels: int) -> torch.Tensor:
    """``1 / 2**i`` for i in 0..levels-1, normalized to sum 1."""
    weights = torch.tensor([1 / 2**i for i in range(levels)])
    return weights / weights.sum()


class SegmentationLoss(nn.Module):
    """Dice + CE on logits ``(B, C, *spatial)`` (``(B, L, C, ...)`` with deep supervision), labels ``(B, 1, ...)``."""

    def __init__(
        self, *, batch_dice: bool, topk_percent: float = 100.0, class_weights: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=batch_dice,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        self.topk_fraction = topk_percent / 100.0
        self.class_weights: torch.Tensor | None
        self.register_buffer("class_weights", class_weights)

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        labels = target[:, 0]
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        cross_entropy = F.cross_entropy(logits, labels, weight=weights, reduction="none")
        if weights is not None:  # a weighted mean, as F.cross_entropy(weight=...) takes it
            cross_entropy = cross_entropy / weights[labels].mean()
        if self.topk_fraction < 1.0:
            flat = cross_entropy.reshape(-1)
            cross_entropy = flat.topk(max(1, int(flat.numel() * self.topk_fraction)), sorted=False).values
        return self.dice(logits, target) + cross_entropy.mean()

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``logits``: one tensor, or the deep-supervision list (highest resolution first)."""
        target = target.long()
        if isinstance(logits, torch.Tensor):
            return self._single(logits, target)
        weights = deep_supervision_weights(len(logits)).to(target.device)
        total = torch.zeros((), device=target.device)
        for weight, level in zip(weights, logits):
            total = total + weight * self._single(level, downsample_target(target, level.shape[2:]))
        return total


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Labels ``(B, 1, *spatial)`` at a head's resolution (nearest neighbour; a no-op at full resolution)."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest").long()
