"""Fixed seeds give the outputs recorded with the single-module augmentation (before the package split).

The golden values summarize each output: per (sample, channel) the image mean and a cosine-weighted sum
(which catches flips and shifts), and per sample a weighted checksum of the segmentation (exact).
The only intended change since the recording is low-resolution simulation through ``F.interpolate``
(trilinear in one pass instead of three linear passes: float rounding, below 1e-6 per voxel).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nnseg.training.augment import TrainingAugmentation

ALL_ON = dict(
    p_rotation=1.0,
    p_scaling=1.0,
    p_noise=1.0,
    p_blur=1.0,
    p_blur_per_channel=1.0,
    p_brightness=1.0,
    p_contrast=1.0,
    p_low_res=1.0,
    p_low_res_per_channel=1.0,
    p_gamma_inverted=1.0,
    p_gamma=1.0,
)
HALF = dict(
    p_rotation=0.5,
    p_scaling=0.5,
    p_noise=0.5,
    p_blur=0.5,
    p_low_res=0.5,
    p_gamma=0.5,
    p_gamma_inverted=0.5,
    p_contrast=0.5,
    p_brightness=0.5,
)

#: name -> (augmentation, input spatial shape, batch, channels)
CASES: dict[str, tuple[Callable[[], TrainingAugmentation], tuple[int, ...], int, int]] = {
    "3d_all_on_linear_seg": (
        lambda: TrainingAugmentation((8, 8, 8), seg_interpolation="linear", **ALL_ON),
        (11, 10, 12),
        3,
        2,
    ),
    "3d_partial": (lambda: TrainingAugmentation.for_patch_size((8, 8, 8), **HALF), (12, 12, 12), 6, 2),
    "2d_cubic_all_on": (
        lambda: TrainingAugmentation.for_patch_size((12, 10), interpolation="cubic", seg_border_value=-1, **ALL_ON),
        (16, 15),
        4,
        3,
    ),
    "aniso_all_on": (lambda: TrainingAugmentation.for_patch_size((4, 16, 16), **ALL_ON), (4, 19, 19), 3, 1),
}

#: name -> (image means, image cosine-weighted sums, seg checksums), recorded with the code before the split
GOLDEN: dict[str, tuple[list[float], list[float], list[int]]] = {
    "3d_all_on_linear_seg": (
        [0.08365861, -0.01982016, -0.06393194, -0.002567713, 0.01332628, -0.009971512],
        [-0.104788, 4.382162, 1.688298, -1.923964, 0.1429902, 0.115063],
        [35426, 34898, 35275],
    ),
    "3d_partial": (
        [
            0.05640234,
            0.00846079,
            0.02581289,
            -0.01190016,
            0.007970768,
            0.009337924,
            -0.06878449,
            0.008516187,
            -0.04049606,
            0.02210361,
            -0.0393789,
            -0.07578075,
        ],
        [
            18.85517,
            -0.4956871,
            0.5882234,
            6.943625,
            -1.198332,
            4.676221,
            9.042376,
            2.649961,
            7.770176,
            -4.721535,
            1.92988,
            -7.384907,
        ],
        [35913, 35149, 36209, 33817, 38022, 35543],
    ),
    "2d_cubic_all_on": (
        [
            -0.04608842,
            0.2581955,
            0.008002515,
            -0.1286182,
            -0.01247791,
            0.1473755,
            -0.04783552,
            -0.1085822,
            -0.118668,
            -0.208603,
            -0.05472217,
            0.0505661,
        ],
        [
            -0.6705399,
            -0.7228556,
            1.427524,
            -2.487085,
            0.06686828,
            -0.7815779,
            -2.540563,
            -1.604748,
            -0.07980018,
            1.315345,
            0.2575656,
            -0.7570117,
        ],
        [8514, 6684, 7831, 7331],
    ),
    "aniso_all_on": (
        [0.01333142, -0.04141098, -0.05873822],
        [-0.1069949, 2.267663, -0.3103785],
        [72087, 71344, 70531],
    ),
}


def _summarize(image: torch.Tensor, seg: torch.Tensor) -> tuple[list[float], list[float], list[int]]:
    flat = image.double().flatten(2)
    weights = torch.cos(torch.arange(flat.shape[-1], dtype=torch.float64))
    seg_weights = torch.arange(seg[0].numel(), dtype=torch.int64) % 97 + 1
    return (
        flat.mean(-1).flatten().tolist(),
        (flat * weights).sum(-1).flatten().tolist(),
        (seg.long().flatten(1) * seg_weights).sum(1).tolist(),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_reproduces_recorded_output(name: str) -> None:
    make, shape, batch, channels = CASES[name]
    source = torch.Generator().manual_seed(0)
    image = torch.randn((batch, channels, *shape), generator=source)
    seg = torch.randint(0, 4, (batch, 1, *shape), generator=source, dtype=torch.int16)
    out_image, out_seg = make()(image, seg, torch.Generator().manual_seed(42))
    means, weighted, checksums = _summarize(out_image, out_seg)
    golden_means, golden_weighted, golden_checksums = GOLDEN[name]
    assert means == pytest.approx(golden_means, abs=1e-5)
    assert weighted == pytest.approx(golden_weighted, rel=1e-5, abs=1e-4)
    assert checksums == golden_checksums
