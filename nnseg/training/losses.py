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

The :class:`~nnseg.labels.LabelScheme` decides the objective: region datasets train one sigmoid per
region with Dice (background included: every region is a foreground) + binary cross-entropy, as
nnU-Net's ``DC_and_BCE_loss``; voxels of the ``ignore`` label are masked out of Dice and (B)CE alike
(MONAI's ``MaskedDiceLoss`` applies the activation first, then the mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnseg.errors import NnsegError
from nnseg.labels import LabelScheme


def deep_supervision_weights(levels: int) -> torch.Tensor:
    """``1 / 2**i`` for i in 0..levels-1, normalized to sum 1."""
    weights = torch.tensor([1 / 2**i for i in range(levels)])
    return weights / weights.sum()


class SegmentationLoss(nn.Module):
    """Dice + CE (softmax) or Dice + BCE per region (sigmoid) on logits ``(B, C, *spatial)`` (``(B, L, C, ...)``
    with deep supervision), labels ``(B, 1, ...)`` as in the files; the scheme's ignore voxels count nowhere."""

    def __init__(
        self,
        *,
        batch_dice: bool,
        topk_percent: float = 100.0,
        class_weights: torch.Tensor | None = None,
        scheme: LabelScheme | None = None,
    ) -> None:
        super().__init__()
        from monai.losses import DiceLoss, MaskedDiceLoss

        self.scheme = scheme or LabelScheme({"background": 0, "foreground": 1})
        sigmoid = self.scheme.objective == "sigmoid"
        if sigmoid and (class_weights is not None or topk_percent < 100.0):
            raise NnsegError(
                "class weights and top-k cross-entropy apply to softmax training; region (sigmoid) training "
                "uses plain Dice + BCE: choose a recipe without class_weight_power / topk_percent"
            )
        dice_type = MaskedDiceLoss if self.scheme.has_ignore else DiceLoss
        self.dice = dice_type(
            include_background=sigmoid,
            to_onehot_y=not sigmoid,
            softmax=not sigmoid,
            sigmoid=sigmoid,
            batch=batch_dice,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        self.topk_fraction = topk_percent / 100.0
        self.class_weights: torch.Tensor | None
        self.register_buffer("class_weights", class_weights)

    def _single(self, logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target, valid = self.scheme.training_target(seg)
        dice = self.dice(logits, target) if valid is None else self.dice(logits, target, mask=valid)
        if self.scheme.objective == "sigmoid":
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            if valid is None:
                return dice + bce.mean()
            weight = valid.expand_as(bce).float()
            return dice + (bce * weight).sum() / weight.sum().clamp_min(1.0)
        labels = target[:, 0]
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        cross_entropy = F.cross_entropy(logits, labels, weight=weights, reduction="none")
        if valid is not None:  # only annotated voxels
            cross_entropy, labels = cross_entropy[valid[:, 0]], labels[valid[:, 0]]
        if weights is not None and labels.numel():  # a weighted mean, as F.cross_entropy(weight=...) takes it
            cross_entropy = cross_entropy / weights[labels].mean()
        if self.topk_fraction < 1.0 and cross_entropy.numel():
            flat = cross_entropy.reshape(-1)
            cross_entropy = flat.topk(max(1, int(flat.numel() * self.topk_fraction)), sorted=False).values
        if not cross_entropy.numel():  # a patch without annotated voxels: no cross-entropy term
            return dice + logits.sum() * 0.0
        return dice + cross_entropy.mean()

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
