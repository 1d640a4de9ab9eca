"""Batched nnU-Net augmentation: exact identity, determinism, label safety, geometry, probabilities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nnseg.training.augment import (
    TrainingAugmentation,
    affine_theta,
    center_crop,
    sampling_patch_size,
    simulate_low_resolution,
)
from nnseg.training.augment.intensity import _blur_axis
from nnseg.training.augment.spatial import _affine_grid

ALL_OFF = dict(
    p_rotation=0,
    p_scaling=0,
    p_noise=0,
    p_blur=0,
    p_brightness=0,
    p_contrast=0,
    p_low_res=0,
    p_gamma_inverted=0,
    p_gamma=0,
    p_mirror=0,
)
INTENSITY_ON = dict(
    p_noise=1,
    p_blur=1,
    p_blur_per_channel=1,
    p_brightness=1,
    p_contrast=1,
    p_low_res=1,
    p_low_res_per_channel=1,
    p_gamma_inverted=1,
    p_gamma=1,
)


def _batch(shape: tuple[int, ...], batch: int = 2, channels: int = 2, labels: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    image = torch.randn(batch, channels, *shape)
    seg = torch.randint(0, labels, (batch, 1, *shape), dtype=torch.int16)
    return image, seg


def _center(tensor: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    crop = tuple(slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(tensor.shape[2:], patch))
    return tensor[(slice(None), slice(None), *crop)]


@pytest.mark.parametrize("shape", [(12, 14, 16), (17, 20, 23)])
def test_all_probabilities_zero_is_an_exact_center_crop(shape: tuple[int, ...]) -> None:
    patch = (12, 14, 16)
    image, seg = _batch(shape)
    aug = TrainingAugmentation(patch, **ALL_OFF)
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(3))
    assert torch.equal(out_image, _center(image, patch))
    assert torch.equal(out_seg, _center(seg, patch))
    assert out_seg.dtype == seg.dtype


def test_same_seed_same_result_and_inputs_untouched() -> None:
    image, seg = _batch((20, 20, 20))
    before = image.clone(), seg.clone()
    aug = TrainingAugmentation((16, 16, 16), p_rotation=0.5, p_scaling=0.5, **INTENSITY_ON)
    first = aug(image, seg, torch.Generator().manual_seed(7))
    second = aug(image, seg, torch.Generator().manual_seed(7))
    other = aug(image, seg, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert torch.equal(image, before[0]) and torch.equal(seg, before[1])


def test_sample_then_apply_is_deterministic() -> None:
    image, seg = _batch((16, 16, 16))
    aug = TrainingAugmentation((16, 16, 16), p_rotation=1, **INTENSITY_ON)
    params = aug.sample_params(2, torch.Generator().manual_seed(1), num_channels=2)
    a, b = aug.apply(image, seg, params), aug.apply(image, seg, params)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("seg_interpolation", ["nearest", "linear"])
def test_rotation_and_scaling_never_invent_labels(seg_interpolation: str) -> None:
    image, seg = _batch((24, 24, 24), batch=4)
    seg[seg == 2] = 7  # labels {0, 1, 3, 7}: interpolating values would produce 2, 4, 5, ...
    aug = TrainingAugmentation(
        (16, 16, 16),
        p_rotation=1,
        p_scaling=1,
        seg_interpolation=seg_interpolation,
        seg_border_value=0,
        **{k: 0 for k in ("p_noise", "p_blur", "p_mirror")},
    )
    _, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert set(out_seg.unique().tolist()) <= {0, 1, 3, 7}
    assert not torch.equal(out_seg, _center(seg, (16, 16, 16)))  # it did transform


def test_seg_border_value_fills_outside() -> None:
    image, seg = _batch((16, 16), channels=1)
    seg.fill_(2)
    aug = TrainingAugmentation((16, 16), **{**ALL_OFF, "p_scaling": 1}, scaling_range=(1.4, 1.4), seg_border_value=-1)
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert out_seg[0, 0, 0, 0] == -1 and out_seg[0, 0, 8, 8] == 2
    assert set(out_seg.unique().tolist()) == {-1, 2}


def test_rotation_by_90_degrees_matches_rot90_for_image_and_seg() -> None:
    image, seg = _batch((16, 16, 16), batch=1)
    aug = TrainingAugmentation(
        (16, 16, 16), **{**ALL_OFF, "p_rotation": 1}, rotation_axes=(0,), rotation_range=(math.pi / 2, math.pi / 2)
    )
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert torch.allclose(out_image, torch.rot90(image, -1, (3, 4)), atol=1e-4)
    assert torch.equal(out_seg, torch.rot90(seg, -1, (3, 4)))


def test_mirroring_flips_image_and_seg_together() -> None:
    image, seg = _batch((8, 10, 12), batch=3)
    aug = TrainingAugmentation((8, 10, 12), **{**ALL_OFF, "p_mirror": 0.5})
    params = aug.sample_params(3, torch.Generator().manual_seed(5), num_channels=2)
    out_image, out_seg = aug.apply(image, seg, params)
    for b in range(3):
        z, y, x = 1, 2, 3
        flipped = [
            n - 1 - i if params.mirror[b, axis] else i for axis, (i, n) in enumerate(zip((z, y, x), (8, 10, 12)))
        ]
        assert out_image[b, 1, z, y, x] == image[b, 1, flipped[0], flipped[1], flipped[2]]
        assert out_seg[b, 0, z, y, x] == seg[b, 0, flipped[0], flipped[1], flipped[2]]
    assert params.mirror.any()


def test_mirror_axes_limit_flips() -> None:
    aug = TrainingAugmentation((8, 8, 8), p_mirror=1, mirror_axes=(1, 2))
    params = aug.sample_params(10, torch.Generator().manual_seed(0))
    assert not params.mirror[:, 0].any() and params.mirror[:, 1:].all()


def test_larger_input_gives_patch_size() -> None:
    image, seg = _batch((30, 27, 25))
    aug = TrainingAugmentation((16, 12, 20), p_rotation=0.5, p_scaling=0.5, **INTENSITY_ON)
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert out_image.shape == (2, 2, 16, 12, 20) and out_seg.shape == (2, 1, 16, 12, 20)


def test_intensity_transforms_leave_seg_untouched() -> None:
    image, seg = _batch((20, 18, 16))
    aug = TrainingAugmentation((16, 16, 16), **{**ALL_OFF, **INTENSITY_ON})
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert torch.equal(out_seg, _center(seg, (16, 16, 16)))
    assert not torch.allclose(out_image, _center(image, (16, 16, 16)))
    assert torch.isfinite(out_image).all()


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_2d_batch(interpolation: str) -> None:
    image, seg = _batch((40, 36), batch=4, channels=3)
    aug = TrainingAugmentation.for_patch_size(
        (32, 32), p_rotation=1, p_scaling=1, interpolation=interpolation, **INTENSITY_ON
    )
    assert aug.rotation_range == pytest.approx((-math.pi, math.pi))
    out_image, out_seg = aug(image, seg, torch.Generator().manual_seed(0))
    assert out_image.shape == (4, 3, 32, 32) and out_seg.shape == (4, 1, 32, 32)
    assert set(out_seg.unique().tolist()) <= {0, 1, 2, 3}


def test_probabilities_are_respected() -> None:
    aug = TrainingAugmentation((8, 8, 8))
    params = aug.sample_params(500, torch.Generator().manual_seed(0), num_channels=2)
    expected = {
        "rotate": 0.2,
        "scale": 0.2,
        "noise": 0.1,
        "brightness": 0.15,
        "contrast": 0.15,
        "gamma_inverted": 0.1,
        "gamma": 0.3,
    }
    for name, p in expected.items():
        fraction = getattr(params, name).double().mean().item()
        assert p - 0.1 <= fraction <= p + 0.1, (name, fraction)
    assert 0.05 <= params.blur.double().mean().item() <= 0.15  # 0.2 x 0.5 per channel
    assert 0.075 <= params.low_res.double().mean().item() <= 0.175  # 0.25 x 0.5
    assert 0.4 <= params.mirror.double().mean().item() <= 0.6
    rotated = params.angles[params.rotate]
    assert rotated.abs().max() <= math.pi / 6 and (params.angles[~params.rotate] == 0).all()
    scales = params.scales[params.scale]
    assert scales.min() >= 0.7 and scales.max() <= 1.4
    factors = params.contrast_factor.flatten()
    assert 0.4 <= (factors < 1).double().mean().item() <= 0.6  # BGContrast: half below 1


def _low_res_reference(volume: torch.Tensor, zoom: float, axes: tuple[int, ...]) -> torch.Tensor:
    """Per axis, in float64 index arithmetic: nearest-exact down to round(n * zoom), linear up (half-pixel)."""
    x = volume.double()
    for axis in axes:
        n = x.shape[axis]
        low = max(1, round(n * zoom))
        picked = torch.clamp(((torch.arange(low) + 0.5) * n / low).floor().long(), max=n - 1)
        x = x.index_select(axis, picked)
        source = ((torch.arange(n) + 0.5) * low / n - 0.5).clamp_min(0)
        lower = source.floor().long().clamp_max(low - 1)
        upper = (lower + 1).clamp_max(low - 1)
        shape = [1] * x.ndim
        shape[axis] = n
        weight = (source - lower).view(shape)
        x = x.index_select(axis, lower) * (1 - weight) + x.index_select(axis, upper) * weight
    return x.float()


@pytest.mark.parametrize(("shape", "ignore"), [((20, 17, 13), ()), ((6, 19, 15), (0,)), ((23, 18), ())])
def test_low_resolution_matches_index_arithmetic(shape: tuple[int, ...], ignore: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    image = torch.randn(2, 3, *shape)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    zoom = torch.tensor([[0.5, 0.9, 0.73], [1.0, 0.61, 0.55]], dtype=torch.float64)
    out = image.clone()
    simulate_low_resolution(out, mask, zoom, ignore)
    axes = tuple(a for a in range(len(shape)) if a not in ignore)
    for b, c in torch.cartesian_prod(torch.arange(2), torch.arange(3)).tolist():
        expected = _low_res_reference(image[b, c], zoom[b, c].item(), axes) if mask[b, c] else image[b, c]
        assert torch.allclose(out[b, c], expected, atol=1e-5), (b, c)
        assert mask[b, c] or torch.equal(out[b, c], image[b, c])
    assert torch.equal(out[1, 0], image[1, 0])  # zoom 1: untouched


def test_blur_uses_nnunet_kernel() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 9, 11)
    sigma = torch.tensor([0.5, 1.0], dtype=torch.float64)
    y = _blur_axis(x, sigma, 1)
    for i, (s, size) in enumerate([(0.5, 3), (1.0, 7)]):  # nnU-Net: nearest odd of 6 * sigma + 0.5
        taps = torch.arange(size, dtype=torch.float64) - size // 2
        kernel = torch.exp(-0.5 * (taps / s) ** 2)
        kernel = (kernel / kernel.sum()).float()
        padded = F.pad(x[i][None, None], (size // 2, size // 2, 0, 0), mode="reflect")
        expected = F.conv2d(padded, kernel.view(1, 1, 1, size))[0, 0]
        assert torch.allclose(y[i], expected, atol=1e-6)


@pytest.mark.parametrize(("patch", "region"), [((16, 12, 20), (25, 21, 30)), ((20, 24), (31, 30))])
def test_affine_grid_matches_torch(patch: tuple[int, ...], region: tuple[int, ...]) -> None:
    aug = TrainingAugmentation(patch, p_rotation=1, p_scaling=1)
    params = aug.sample_params(3, torch.Generator().manual_seed(0))
    theta = affine_theta(params.angles, params.scales, region, patch, aug.rotation_axes, aug.scale_axes).float()
    expected = F.affine_grid(theta, [3, 1, *patch], align_corners=False)
    assert torch.allclose(_affine_grid(theta, patch), expected, atol=1e-6)


def test_gamma_retains_stats_and_contrast_preserves_range() -> None:
    image, seg = _batch((12, 12, 12), channels=1)
    image = image.abs() + 1
    gamma = TrainingAugmentation((12, 12, 12), **{**ALL_OFF, "p_gamma": 1})
    out, _ = gamma(image, seg, torch.Generator().manual_seed(0))
    assert torch.allclose(out.mean((2, 3, 4)), image.mean((2, 3, 4)), atol=1e-4)
    assert torch.allclose(out.std((2, 3, 4)), image.std((2, 3, 4)), atol=1e-4)
    contrast = TrainingAugmentation((12, 12, 12), **{**ALL_OFF, "p_contrast": 1}, contrast_range=(1.25, 1.25))
    out, _ = contrast(image, seg, torch.Generator().manual_seed(0))
    assert out.amin() >= image.amin() and out.amax() <= image.amax()
    assert out.std() > image.std()


def test_anisotropic_patch_uses_in_plane_augmentation() -> None:
    aug = TrainingAugmentation.for_patch_size((8, 64, 64))
    assert aug.rotation_axes == (0,) and aug.scale_axes == (1, 2) and aug.low_res_ignore_axes == (0,)
    assert aug.sampling_patch_size == (8, 75, 75)
    params = aug.sample_params(50, torch.Generator().manual_seed(0))
    assert params.angles.shape == (50, 1)


def test_sampling_patch_size_matches_nnunet() -> None:
    assert sampling_patch_size((128, 128, 128), math.pi / 6) == (205, 205, 205)
    assert sampling_patch_size((64, 128, 96), math.pi / 6) == (140, 186, 135)
    assert sampling_patch_size((20, 256, 256), math.pi, (0,), (1, 2)) == (20, 301, 301)
    assert sampling_patch_size((512, 512), math.pi) == (602, 602)
    assert TrainingAugmentation.for_patch_size((56, 40)).sampling_patch_size == (65, 65)  # +-180 deg
    assert TrainingAugmentation.for_patch_size((64, 40)).sampling_patch_size == (84, 47)  # elongated: +-15 deg


def test_center_crop_matches_the_training_crop() -> None:
    image, seg = _batch((20, 21, 22))
    out_image, out_seg = center_crop(image, (16, 16, 16)), center_crop(seg, [16, 16, 16])
    assert torch.equal(out_image, _center(image, (16, 16, 16))) and torch.equal(out_seg, _center(seg, (16, 16, 16)))
    assert out_image.data_ptr() == image[:, :, 2:, 2:, 3:].data_ptr()  # a view: (s - p) // 2 voxels off the start
    aug = TrainingAugmentation((16, 16, 16), **ALL_OFF)
    assert torch.equal(aug(image, seg, torch.Generator())[0], out_image)
    assert center_crop(image[0, 0], (16, 16)).shape == (20, 16, 16)  # leading axes are kept
    with pytest.raises(ValueError, match="cannot center-crop"):
        center_crop(image, (16, 24, 16))
    with pytest.raises(ValueError, match="positive"):
        center_crop(image, (16, 0, 16))


def test_input_errors_name_the_problem() -> None:
    aug = TrainingAugmentation((16, 16, 16))
    image, seg = _batch((12, 16, 16))
    with pytest.raises(ValueError, match="smaller than patch_size"):
        aug(image, seg, torch.Generator())
    image, seg = _batch((16, 16, 16))
    with pytest.raises(ValueError, match="integer"):
        aug(image, seg.float(), torch.Generator())
    params = aug.sample_params(2, torch.Generator(), num_channels=1)
    with pytest.raises(ValueError, match="2 x 1 channels"):
        aug.apply(image, seg, params)
    with pytest.raises(ValueError, match="p_rotation"):
        TrainingAugmentation((16, 16, 16), p_rotation=1.5)
    with pytest.raises(ValueError, match="tricubic"):
        TrainingAugmentation((16, 16, 16), interpolation="cubic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    image, seg = _batch((20, 20, 20))
    aug = TrainingAugmentation((16, 16, 16), p_rotation=1, p_scaling=1, **{**INTENSITY_ON, "p_noise": 0})
    params = aug.sample_params(2, torch.Generator().manual_seed(0), num_channels=2)
    cpu_image, cpu_seg = aug.apply(image, seg, params)
    gpu_image, gpu_seg = aug.apply(image.cuda(), seg.cuda(), params)
    assert torch.allclose(cpu_image, gpu_image.cpu(), atol=1e-3)
    assert (cpu_seg != gpu_seg.cpu()).double().mean() < 1e-3
