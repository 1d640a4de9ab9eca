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


def test_overlapping_windows_are_blended_with_the_gaussian_weights() -> None:
    """Each window answers with its own constant; a voxel covered by two windows gets their Gaussian-weighted mean."""
    patch = (8, 8, 16)
    image = torch.zeros(1, 8, 8, 24)  # two windows along the last axis: starts 0 and 8
    answers = iter([1.0, 5.0])

    def per_window(batch: torch.Tensor) -> torch.Tensor:
        value = next(answers)
        out = torch.zeros(batch.shape[0], 2, *batch.shape[2:])
        out[:, 1] = value
        return out

    logits = predict_sliding_window(per_window, image, patch, 2, window_batch=1)
    weights = gaussian_importance(patch)[4, 4]  # weights along the last axis, at the patch centre
    first, second = weights[8:16], weights[0:8]  # the shared voxels 8..15 in each window's own coordinates
    expected = (1.0 * first + 5.0 * second) / (first + second)
    torch.testing.assert_close(logits[1, 4, 4, 8:16], expected)
    assert torch.all(logits[1, 4, 4, :8] == 1.0) and torch.all(logits[1, 4, 4, 16:] == 5.0)
    uniform = torch.full((8,), 3.0)
    assert not torch.allclose(logits[1, 4, 4, 8:16], uniform)  # a plain average would give 3 everywhere


def test_mirroring_averages_the_flipped_predictions() -> None:
    """A network that answers with a ramp along the last axis: mirroring that axis averages the ramp away."""

    def ramp(batch: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(batch.shape[0], 2, *batch.shape[2:])
        out[:, 1] = torch.arange(batch.shape[-1], dtype=torch.float32)
        return out

    image = torch.zeros(1, 8, 8, 8)
    plain = predict_sliding_window(ramp, image, (8, 8, 8), 2)
    mirrored = predict_sliding_window(ramp, image, (8, 8, 8), 2, mirror_axes=(2,))
    assert torch.equal(plain[1, 0, 0], torch.arange(8, dtype=torch.float32))
    torch.testing.assert_close(mirrored[1], torch.full((8, 8, 8), 3.5))
    other_axis = predict_sliding_window(ramp, image, (8, 8, 8), 2, mirror_axes=(0, 1))
    torch.testing.assert_close(other_axis[1, 0, 0], torch.arange(8, dtype=torch.float32))
