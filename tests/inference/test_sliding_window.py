"""Sliding window: coverage, Gaussian weights, skipping, mirroring."""

from __future__ import annotations

import pytest
import torch

from nnseg.inference.sliding_window import (
    gaussian_importance,
    mirror_combinations,
    predict_sliding_window,
    window_starts,
)


def test_window_starts_cover_the_volume_with_half_overlap() -> None:
    starts = window_starts((100, 64, 30), (64, 64, 32), 0.5)
    assert starts[0] == [0, 18, 36] and starts[1] == [0] and starts[2] == [0]
    with pytest.raises(ValueError, match="step_size"):
        window_starts((10,), (4,), 0)


def test_gaussian_is_centred_and_positive() -> None:
    weights = gaussian_importance((16, 16, 16))
    assert weights.max() == 1 and weights.min() > 0 and weights[8, 8, 8] == 1


def _one_hot_of_sign(batch: torch.Tensor) -> torch.Tensor:
    """A 'network' whose answer depends only on each voxel: class 1 where the input is positive."""
    positive = (batch[:, :1] > 0).float()
    return torch.cat([1 - positive, positive], dim=1) * 10


def test_pointwise_network_is_reproduced_exactly_with_mirroring() -> None:
    image = torch.randn(1, 37, 29, 41)
    logits = predict_sliding_window(_one_hot_of_sign, image, (16, 16, 16), 2, mirror_axes=(0, 1, 2), window_batch=3)
    assert logits.shape == (2, 37, 29, 41)
    assert torch.equal(logits.argmax(0), (image[0] > 0).long())
    assert len(mirror_combinations((0, 1, 2))) == 8


def test_small_images_are_padded_and_empty_windows_skipped() -> None:
    image = torch.randn(1, 10, 12, 9)
    assert predict_sliding_window(_one_hot_of_sign, image, (16, 16, 16), 2).shape == (2, 10, 12, 9)
    big = torch.randn(1, 64, 16, 16)
    body = torch.zeros(64, 16, 16, dtype=torch.bool)
    body[:10] = True
    calls = []

    def counting(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        return _one_hot_of_sign(batch)

    logits = predict_sliding_window(counting, big, (16, 16, 16), 2, body_mask=body, window_batch=1)
    assert sum(calls) == 2  # of 7 windows along axis 0, only those touching the body run
    assert (logits[:, 40:].argmax(0) == 0).all()
