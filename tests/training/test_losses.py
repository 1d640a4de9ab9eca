"""Dice + CE loss with deep supervision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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


def test_full_cross_entropy_is_monais_dice_ce() -> None:
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 12, 10, 8), torch.randint(0, 4, (2, 1, 12, 10, 8))
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert SegmentationLoss(batch_dice=True)(logits, target) == pytest.approx(float(reference(logits, target)), 1e-6)


def test_topk_cross_entropy_averages_only_the_hardest_voxels() -> None:
    logits = torch.zeros(1, 2, 10, 10, 10)
    logits[:, 0] = 5.0  # confident background everywhere
    target = torch.zeros(1, 1, 10, 10, 10, dtype=torch.long)
    target[0, 0, :1, :1, :] = 1  # 10 voxels of a tiny structure, 1 % of the patch
    dice_only = SegmentationLoss(batch_dice=True)(logits, target) - F.cross_entropy(logits, target[:, 0])
    full = SegmentationLoss(batch_dice=True)(logits, target) - dice_only
    top1 = SegmentationLoss(batch_dice=True, topk_percent=1)(logits, target) - dice_only
    # all of the top 1 % are the missed structure: its cross-entropy is no longer diluted 100-fold
    assert float(top1) == pytest.approx(float(F.softplus(torch.tensor(5.0))), rel=1e-4)
    assert float(top1) > 50 * float(full)


def test_class_weights_make_a_weighted_mean_like_torch() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8))
    weights = torch.tensor([1.0, 4.0, 30.0])
    plain = SegmentationLoss(batch_dice=True)
    weighted = SegmentationLoss(batch_dice=True, class_weights=weights)
    dice = plain(logits, target) - F.cross_entropy(logits, target[:, 0])
    expected = F.cross_entropy(logits, target[:, 0], weight=weights)
    assert float(weighted(logits, target) - dice) == pytest.approx(float(expected), rel=1e-5)
