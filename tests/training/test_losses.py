"""Dice + CE loss with deep supervision."""

from __future__ import annotations

import torch

from nnseg.training.losses import SegmentationLoss, deep_supervision_weights


def test_weights_halve_and_sum_to_one() -> None:
    weights = deep_supervision_weights(4)
    assert torch.allclose(weights, torch.tensor([8, 4, 2, 1]) / 15)


def test_good_predictions_score_lower_and_deep_supervision_stacks() -> None:
    target = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 20
    random = torch.randn(2, 3, 8, 8, 8)
    loss = SegmentationLoss(batch_dice=True)
    assert loss(perfect, target) < loss(random, target)
    stacked = torch.stack([perfect, random], dim=1)
    expected = (2 / 3) * loss(perfect, target) + (1 / 3) * loss(random, target)
    assert torch.allclose(loss(stacked, target), expected)
