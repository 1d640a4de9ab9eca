"""Dice + CE loss with deep supervision."""

from __future__ import annotations

import torch

from nnseg.training.losses import SegmentationLoss, deep_supervision_weights, downsample_target


def test_weights_halve_and_sum_to_one() -> None:
    weights = deep_supervision_weights(4)
    assert torch.allclose(weights, torch.tensor([8, 4, 2, 1]) / 15)


def test_good_predictions_score_lower_and_deep_supervision_weighs_the_levels() -> None:
    target = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 20
    random = torch.randn(2, 3, 8, 8, 8)
    loss = SegmentationLoss(batch_dice=True)
    assert loss(perfect, target) < loss(random, target)
    expected = (2 / 3) * loss(perfect, target) + (1 / 3) * loss(random, target)
    assert torch.allclose(loss([perfect, random], target), expected)


def test_lower_heads_are_scored_against_a_downsampled_target() -> None:
    target = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    half = downsample_target(target, (4, 4, 4))
    assert half.shape == (1, 1, 4, 4, 4) and half.sum() == 8  # the 4^3 cube at half resolution
    perfect_half = torch.nn.functional.one_hot(half[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 20
    wrong_half = -perfect_half
    loss = SegmentationLoss(batch_dice=False)
    full = torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 20
    assert loss([full, perfect_half], target) < 0.01 < loss([full, wrong_half], target)
