"""The loss under the label scheme: ignore voxels count nowhere; regions train Dice + BCE per sigmoid output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnseg.errors import NnsegError
from nnseg.labels import LabelScheme
from nnseg.training.losses import SegmentationLoss

SPARSE = LabelScheme.from_json({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
REGIONS = LabelScheme.from_json(
    {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3], "ignore": 4}, [1, 2, 3]
)


def _target(ignore: int) -> torch.Tensor:
    torch.manual_seed(0)
    target = torch.randint(0, ignore, (2, 1, 6, 6, 6))
    target[:, :, :3] = ignore  # half the slices unannotated
    return target


@pytest.mark.parametrize(("scheme", "ignore"), [(SPARSE, 3), (REGIONS, 4)])
@pytest.mark.parametrize("batch_dice", [True, False])
def test_ignore_voxels_change_neither_loss_nor_gradient(scheme: LabelScheme, ignore: int, batch_dice: bool) -> None:
    loss = SegmentationLoss(batch_dice=batch_dice, scheme=scheme)
    target = _target(ignore)
    logits = torch.randn(2, scheme.num_outputs, 6, 6, 6, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, :, :3] == 0)  # no gradient reaches unannotated voxels
    # whatever the network says there, the loss is the same
    changed = logits.detach().clone()
    changed[:, :, :3] = torch.randn_like(changed[:, :, :3]) * 10
    assert torch.allclose(loss(changed, target), value.detach(), atol=1e-6)
    assert torch.allclose(
        loss([logits, logits[:, :, ::2, ::2, ::2]], target),
        loss([changed, changed[:, :, ::2, ::2, ::2]], target),
        atol=1e-6,
    )


def test_sigmoid_objective_is_dice_plus_bce_per_region() -> None:
    scheme = LabelScheme.from_json({"background": 0, "whole": [1, 2], "core": [2]}, [1, 2])
    torch.manual_seed(1)
    labels = torch.randint(0, 3, (2, 1, 5, 5, 5))
    logits = torch.randn(2, 2, 5, 5, 5)
    target = torch.cat([(labels >= 1), (labels == 2)], 1).float()
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * target).sum((0, 2, 3, 4))
    denominator = probabilities.sum((0, 2, 3, 4)) + target.sum((0, 2, 3, 4))
    dice = 1 - ((2 * intersection + 1e-5) / (denominator + 1e-5)).mean()
    expected = dice + F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(SegmentationLoss(batch_dice=True, scheme=scheme)(logits, labels), expected, atol=1e-5)
    good = target * 40 - 20
    assert SegmentationLoss(batch_dice=True, scheme=scheme)(good, labels) < 0.01


def test_class_weights_are_refused_for_region_training() -> None:
    with pytest.raises(NnsegError, match="softmax training"):
        SegmentationLoss(batch_dice=True, scheme=REGIONS, class_weights=torch.ones(3))
