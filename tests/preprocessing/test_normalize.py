"""Normalization schemes as planned."""

from __future__ import annotations

import numpy as np
import pytest

from nnseg.planning.plan import ChannelNormalization
from nnseg.preprocessing.normalize import normalize


def test_ct_clips_then_uses_dataset_statistics() -> None:
    image = np.array([[[[-1000.0, 0.0, 50.0, 3000.0]]]], np.float32)
    plan = ChannelNormalization("CT", "ct", False, clip_low=-100.0, clip_high=200.0, mean=50.0, std=25.0)
    out = normalize(image, [plan], None)
    np.testing.assert_allclose(out[0, 0, 0], [-6.0, -2.0, 0.0, 6.0])


def test_zscore_with_mask_leaves_the_outside_at_zero() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 2:8, 2:8, 2:8] = rng.normal(300, 40, (6, 6, 6))
    inside = image[0] != 0
    out = normalize(image, [ChannelNormalization("T1", "zscore", True)], inside)
    assert out[0][inside].mean() == pytest.approx(0, abs=1e-5)
    assert out[0][inside].std() == pytest.approx(1, abs=1e-4)
    assert (out[0][~inside] == 0).all()
    whole = normalize(image, [ChannelNormalization("T1", "zscore", False)], inside)
    assert whole[0].mean() == pytest.approx(0, abs=1e-5)


def test_other_schemes_and_channel_count() -> None:
    image = np.array([[[[0.0, 51.0, 255.0]]], [[[2.0, 4.0, 6.0]]]], np.float32)
    plans = [ChannelNormalization("rgb", "rgb_to_0_1", False), ChannelNormalization("x", "rescale_to_0_1", False)]
    out = normalize(image, plans, None)
    np.testing.assert_allclose(out[0, 0, 0], [0, 0.2, 1])
    np.testing.assert_allclose(out[1, 0, 0], [0, 0.5, 1])
    assert (normalize(image, [ChannelNormalization("a", "none", False)] * 2, None) == image).all()
    with pytest.raises(ValueError, match="2 channels but the plan normalizes 1"):
        normalize(image, plans[:1], None)
