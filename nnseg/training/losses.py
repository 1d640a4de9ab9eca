"""Dice + cross-entropy with deep supervision, nnU-Net's training loss, from MONAI's DiceCELoss.

Soft Dice over the foreground classes (background excluded), optionally pooled over the
batch ("batch Dice", as planned for 3D), smooth 1e-5, plus cross-entropy, weights 1:1.
With deep supervision the network returns one output per decoder level (upsampled to
the patch by DynUNet); level ``i`` gets weight ``1 / 2**i``, normalized to sum to 1.
"""

from __future__ import annotations

import torch
from torch import nn


def deep_supervision_weights(levels: int) -> torch.Tensor:
    """``1 / 2**i`` for i in 0..levels-1, normalized to sum 1."""
    weights = torch.tensor([1 / 2**i for i in range(levels)])
    return weights / weights.sum()


class SegmentationLoss(nn.Module):
    """Dice + CE on logits ``(B, C, *spatial)`` (``(B, L, C, ...)`` with deep supervision), labels ``(B, 1, ...)``."""

    def __init__(self, *, batch_dice: bool) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=batch_dice,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
            lambda_dice=1.0,
            lambda_ce=1.0,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if logits.ndim == target.ndim:  # one output
            return self.loss(logits.float(), target)
        weights = deep_supervision_weights(logits.shape[1]).to(logits.device)
        return sum(weights[i] * self.loss(logits[:, i].float(), target) for i in range(logits.shape[1]))
