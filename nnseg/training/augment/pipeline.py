"""The training pipeline: draw every random quantity (:class:`AugmentationParams`), then apply the steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nnseg.training.augment import intensity, spatial
from nnseg.training.augment._common import Range, check_axes, check_batch, check_patch_size, check_range
from nnseg.training.augment.spatial import ANISOTROPY_THRESHOLD, sampling_patch_size


@dataclass(frozen=True)
class AugmentationParams:
    """One draw of every random quantity of :class:`TrainingAugmentation`, per sample (CPU tensors).

    ``B`` is the batch size, ``C`` the number of image channels, ``D`` the number of spatial axes.
    Values where a step is not applied are neutral (angle 0, factor 1) but the masks decide.

    Attributes:
        rotate: ``(B,)`` bool, sample is rotated; angles: ``(B, R)`` radians per rotation axis (R = 1 in 2D).
        scale: ``(B,)`` bool, sample is scaled; scales: ``(B,)`` coordinate factor (> 1: objects shrink).
        noise: ``(B,)`` bool; noise_std: ``(B,)``; noise_seed: seeds the generator of the noise field.
        blur: ``(B, C)`` bool, channel is blurred; blur_sigma: ``(B, C, D)`` sigma in voxels per axis.
        brightness: ``(B,)`` bool; brightness_factor: ``(B, C)`` multiplier.
        contrast: ``(B,)`` bool; contrast_factor: ``(B, C)`` multiplier of the deviation from the mean.
        low_res: ``(B, C)`` bool; low_res_zoom: ``(B, C)`` downsampling factor (same for all axes).
        gamma_inverted: ``(B,)`` bool; gamma_inverted_value: ``(B, C)`` exponent applied to the negated image.
        gamma: ``(B,)`` bool; gamma_value: ``(B, C)`` exponent.
        mirror: ``(B, D)`` bool, flip along spatial axis d.
    """

    rotate: Tensor
    angles: Tensor
    scale: Tensor
    scales: Tensor
    noise: Tensor
    noise_std: Tensor
    noise_seed: int
    blur: Tensor
    blur_sigma: Tensor
    brightness: Tensor
    brightness_factor: Tensor
    contrast: Tensor
    contrast_factor: Tensor
    low_res: Tensor
    low_res_zoom: Tensor
    gamma_inverted: Tensor
    gamma_inverted_value: Tensor
    gamma: Tensor
    gamma_value: Tensor
    mirror: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.rotate.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.blur.shape[1])

    @property
    def spatial(self) -> Tensor:
        """``(B,)`` bool: the sample is resampled (rotated or scaled) rather than just cropped."""
        return self.rotate | self.scale


class TrainingAugmentation:
    """nnU-Net v2's default training augmentation, batched; see the package docstring for the order.

    Probabilities are per sample unless named per channel; defaults are nnU-Net's.

    Args:
        patch_size: output spatial size (array order); 2 or 3 axes.
        rotation_range: angle range in radians, uniform per rotation axis (±30°; :meth:`for_patch_size`
            picks nnU-Net's ±180° / ±15° where it uses them).
        rotation_axes: 3D only: axes rotated *about*, composed in this order (all by default; ``(0,)``
            rotates in-plane, nnU-Net's "dummy 2D"). 2D rotates in-plane; leave it None.
        p_rotation: probability of a rotation (0.2); a rotated sample gets an angle on every rotation axis.
        scaling_range: coordinate scale factor range (0.7, 1.4), one factor for all axes; larger zooms out.
        scale_axes: axes the factor applies to (all by default; nnU-Net scales in-plane only in dummy 2D).
        p_scaling: probability of scaling (0.2).
        interpolation: image resampling, "linear" (nnU-Net v2) or "cubic" (2D only: no tricubic grid_sample).
        seg_interpolation: "nearest" (default) or "linear": nnU-Net v2's linear one-hot resampling and argmax
            (smoother borders, one host sync for the label set, memory x number of labels). Neither invents labels.
        seg_border_value: label where the transform samples outside the input (0, as nnU-Net after its
            -1 -> 0 relabelling). Images are padded with 0.
        p_noise: probability of additive Gaussian noise (0.1); noise_std_range: (0, 0.1), nnU-Net's
            ``noise_variance`` used, as there, as the standard deviation; one field shared by all channels.
        p_blur: probability of Gaussian blur (0.2); p_blur_per_channel: then per channel (0.5).
        blur_sigma_range: sigma in voxels (0.5, 1.0) per channel and axis; nnU-Net's kernel size, reflected border.
        p_brightness: probability of a multiplicative brightness change (0.15); brightness_range: (0.75, 1.25).
        p_contrast: probability of a contrast change (0.15); contrast_range: (0.75, 1.25),
            ``(x - mean) * f + mean`` clipped to the channel's original range.
        p_low_res: probability of simulating low resolution (0.25); p_low_res_per_channel: then per channel (0.5).
        low_res_zoom_range: zoom (0.5, 1.0), same for all axes: nearest-exact down to ``round(n * zoom)``,
            linear up; low_res_ignore_axes: axes kept (nnU-Net: the out-of-plane axis in dummy 2D).
        p_gamma_inverted: probability of gamma on the inverted image (0.1); p_gamma: on the image (0.3).
        gamma_range: exponent range (0.7, 1.5) per channel, on the channel rescaled to [0, 1]; mean and
            standard deviation are restored.
        mirror_axes: spatial axes that may be flipped (all by default); p_mirror: per axis (0.5).

    Brightness, contrast and gamma factors are drawn as nnU-Net's ``BGContrast``: with probability 0.5
    uniformly in ``[low, 1)``, otherwise uniformly in ``[max(low, 1), high)``.
    """

    def __init__(
        self,
        patch_size: tuple[int, ...] | list[int],
        *,
        rotation_range: Range = (-math.pi / 6, math.pi / 6),
        rotation_axes: tuple[int, ...] | None = None,
        p_rotation: float = 0.2,
        scaling_range: Range = (0.7, 1.4),
        scale_axes: tuple[int, ...] | None = None,
        p_scaling: float = 0.2,
        interpolation: Literal["linear", "cubic"] = "linear",
        seg_interpolation: Literal["nearest", "linear"] = "nearest",
        seg_border_value: int = 0,
        p_noise: float = 0.1,
        noise_std_range: Range = (0.0, 0.1),
        p_blur: float = 0.2,
        p_blur_per_channel: float = 0.5,
        blur_sigma_range: Range = (0.5, 1.0),
        p_brightness: float = 0.15,
        brightness_range: Range = (0.75, 1.25),
        p_contrast: float = 0.15,
        contrast_range: Range = (0.75, 1.25),
        p_low_res: float = 0.25,
        p_low_res_per_channel: float = 0.5,
        low_res_zoom_range: Range = (0.5, 1.0),
        low_res_ignore_axes: tuple[int, ...] = (),
        p_gamma_inverted: float = 0.1,
        p_gamma: float = 0.3,
        gamma_range: Range = (0.7, 1.5),
        mirror_axes: tuple[int, ...] | None = None,
        p_mirror: float = 0.5,
    ) -> None:
        self.patch_size = check_patch_size(patch_size)
        dims = len(self.patch_size)
        all_axes = tuple(range(dims))
        if dims == 2 and rotation_axes is not None:
            raise ValueError("2D patches rotate in-plane; leave rotation_axes unset")
        self.rotation_axes = all_axes if rotation_axes is None else check_axes(rotation_axes, dims, "rotation_axes")
        self.scale_axes = all_axes if scale_axes is None else check_axes(scale_axes, dims, "scale_axes")
        self.mirror_axes = all_axes if mirror_axes is None else check_axes(mirror_axes, dims, "mirror_axes")
        self.low_res_ignore_axes = check_axes(low_res_ignore_axes, dims, "low_res_ignore_axes")
        if interpolation not in ("linear", "cubic"):
            raise ValueError(f"interpolation must be 'linear' or 'cubic', got {interpolation!r}")
        if interpolation == "cubic" and dims == 3:
            raise ValueError("interpolation='cubic' is 2D only (torch grid_sample has no tricubic mode)")
        if seg_interpolation not in ("nearest", "linear"):
            raise ValueError(f"seg_interpolation must be 'nearest' or 'linear', got {seg_interpolation!r}")
        self.interpolation = interpolation
        self.seg_interpolation = seg_interpolation
        self.seg_border_value = int(seg_border_value)

        probabilities = {
            "p_rotation": p_rotation,
            "p_scaling": p_scaling,
            "p_noise": p_noise,
            "p_blur": p_blur,
            "p_blur_per_channel": p_blur_per_channel,
            "p_brightness": p_brightness,
            "p_contrast": p_contrast,
            "p_low_res": p_low_res,
            "p_low_res_per_channel": p_low_res_per_channel,
            "p_gamma_inverted": p_gamma_inverted,
            "p_gamma": p_gamma,
            "p_mirror": p_mirror,
        }
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.p_rotation, self.p_scaling, self.p_noise, self.p_mirror = p_rotation, p_scaling, p_noise, p_mirror
        self.p_blur, self.p_blur_per_channel = p_blur, p_blur_per_channel
        self.p_brightness, self.p_contrast = p_brightness, p_contrast
        self.p_low_res, self.p_low_res_per_channel = p_low_res, p_low_res_per_channel
        self.p_gamma_inverted, self.p_gamma = p_gamma_inverted, p_gamma

        self.rotation_range = check_range(rotation_range, "rotation_range")
        self.scaling_range = check_range(scaling_range, "scaling_range", positive=True)
        self.noise_std_range = check_range(noise_std_range, "noise_std_range", non_negative=True)
        self.blur_sigma_range = check_range(blur_sigma_range, "blur_sigma_range", positive=True)
        self.brightness_range = check_range(brightness_range, "brightness_range", positive=True)
        self.contrast_range = check_range(contrast_range, "contrast_range", positive=True)
        self.low_res_zoom_range = check_range(low_res_zoom_range, "low_res_zoom_range", positive=True)
        if self.low_res_zoom_range[1] > 1:
            raise ValueError(f"low_res_zoom_range must not exceed 1, got {self.low_res_zoom_range}")
        self.gamma_range = check_range(gamma_range, "gamma_range", positive=True)

    @classmethod
    def for_patch_size(cls, patch_size: tuple[int, ...] | list[int], **overrides: object) -> TrainingAugmentation:
        """Rotation, mirroring and dummy-2D settings as nnU-Net derives them from the patch size.

        2D: ±15° when the patch is elongated (max / min > 1.5), else ±180°. 3D: ±30° about every axis;
        when ``max(patch) / patch[0] > 3`` nnU-Net augments slice-wise instead: ±180° in-plane only
        (about axis 0), scaling in-plane only and no low-resolution simulation along axis 0.
        ``overrides`` replace any keyword of the constructor.
        """
        patch = check_patch_size(patch_size)
        settings: dict[str, object] = {}
        if len(patch) == 2:
            settings["rotation_range"] = _symmetric_degrees(15.0 if max(patch) / min(patch) > 1.5 else 180.0)
        elif max(patch) / patch[0] > ANISOTROPY_THRESHOLD:
            settings.update(
                rotation_range=_symmetric_degrees(180.0),
                rotation_axes=(0,),
                scale_axes=(1, 2),
                low_res_ignore_axes=(0,),
            )
        else:
            settings["rotation_range"] = _symmetric_degrees(30.0)
        settings.update(overrides)
        return cls(patch, **settings)  # type: ignore[arg-type]

    @property
    def sampling_patch_size(self) -> tuple[int, ...]:
        """The larger region the data loader should sample so that rotated corners hold data (nnU-Net's rule)."""
        return sampling_patch_size(
            self.patch_size, max(abs(a) for a in self.rotation_range), self.rotation_axes, self.scale_axes
        )

    def sample_params(
        self, batch_size: int, generator: torch.Generator, *, num_channels: int = 1
    ) -> AugmentationParams:
        """Draw every random quantity for a batch from ``generator`` (the only source of randomness)."""
        if batch_size < 1 or num_channels < 1:
            raise ValueError(f"batch_size and num_channels must be >= 1, got {batch_size} and {num_channels}")
        dims = len(self.patch_size)
        b, c = batch_size, num_channels
        device = generator.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=device, dtype=torch.float64)

        def uniform(bounds: Range, *shape: int) -> Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * rand(*shape)

        def bg_contrast(bounds: Range, *shape: int) -> Tensor:
            low_half = (rand(*shape) < 0.5) & (bounds[0] < 1)
            below = uniform((bounds[0], min(bounds[1], 1.0)), *shape)
            above = uniform((max(bounds[0], 1.0), bounds[1]), *shape)
            return torch.where(low_half, below, above)

        # the order of the draws fixes the result of a seed: append new draws at the end
        n_angles = 1 if dims == 2 else len(self.rotation_axes)
        rotate = rand(b) < self.p_rotation
        angles = torch.where(rotate[:, None], uniform(self.rotation_range, b, n_angles), 0.0)
        scale = rand(b) < self.p_scaling
        scales = torch.where(scale, uniform(self.scaling_range, b), 1.0)
        noise = rand(b) < self.p_noise
        noise_std = torch.where(noise, uniform(self.noise_std_range, b), 0.0)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
        blur = (rand(b) < self.p_blur)[:, None] & (rand(b, c) < self.p_blur_per_channel)
        blur_sigma = uniform(self.blur_sigma_range, b, c, dims)
        brightness = rand(b) < self.p_brightness
        brightness_factor = bg_contrast(self.brightness_range, b, c)
        contrast = rand(b) < self.p_contrast
        contrast_factor = bg_contrast(self.contrast_range, b, c)
        low_res = (rand(b) < self.p_low_res)[:, None] & (rand(b, c) < self.p_low_res_per_channel)
        low_res_zoom = uniform(self.low_res_zoom_range, b, c)
        gamma_inverted = rand(b) < self.p_gamma_inverted
        gamma_inverted_value = bg_contrast(self.gamma_range, b, c)
        gamma = rand(b) < self.p_gamma
        gamma_value = bg_contrast(self.gamma_range, b, c)
        allowed = torch.zeros(dims, dtype=torch.bool, device=device)
        allowed[list(self.mirror_axes)] = True
        mirror = (rand(b, dims) < self.p_mirror) & allowed

        params = dict(
            rotate=rotate,
            angles=angles,
            scale=scale,
            scales=scales,
            noise=noise,
            noise_std=noise_std,
            blur=blur,
            blur_sigma=blur_sigma,
            brightness=brightness,
            brightness_factor=brightness_factor,
            contrast=contrast,
            contrast_factor=contrast_factor,
            low_res=low_res,
            low_res_zoom=low_res_zoom,
            gamma_inverted=gamma_inverted,
            gamma_inverted_value=gamma_inverted_value,
            gamma=gamma,
            gamma_value=gamma_value,
            mirror=mirror,
        )
        return AugmentationParams(noise_seed=noise_seed, **{k: v.cpu() for k, v in params.items()})

    def apply(self, image: Tensor, seg: Tensor, params: AugmentationParams) -> tuple[Tensor, Tensor]:
        """Augment a batch with explicit parameters; deterministic. Inputs are not modified.

        Returns:
            (image ``(B, C, *patch_size)``, seg ``(B, S, *patch_size)``), on the input's device and dtypes.
        """
        check_batch(image, seg, self.patch_size)
        if params.batch_size != image.shape[0] or params.num_channels != image.shape[1]:
            raise ValueError(
                f"params were sampled for batch {params.batch_size} x {params.num_channels} channels; "
                f"image has {image.shape[0]} x {image.shape[1]}"
            )
        if params.mirror.shape[1] != len(self.patch_size):
            raise ValueError(
                f"params were sampled for {params.mirror.shape[1]}D patches, this augmentation is "
                f"{len(self.patch_size)}D"
            )
        image, seg = spatial.spatial_transform(
            image,
            seg,
            params.spatial,
            params.angles,
            params.scales,
            patch_size=self.patch_size,
            rotation_axes=self.rotation_axes,
            scale_axes=self.scale_axes,
            interpolation=self.interpolation,
            seg_interpolation=self.seg_interpolation,
            seg_border_value=self.seg_border_value,
        )
        intensity.add_noise(image, params.noise, params.noise_std, params.noise_seed)
        intensity.blur(image, params.blur, params.blur_sigma)
        intensity.scale_brightness(image, params.brightness, params.brightness_factor)
        intensity.adjust_contrast(image, params.contrast, params.contrast_factor)
        intensity.simulate_low_resolution(image, params.low_res, params.low_res_zoom, self.low_res_ignore_axes)
        intensity.adjust_gamma(image, params.gamma_inverted, params.gamma_inverted_value, invert=True)
        intensity.adjust_gamma(image, params.gamma, params.gamma_value, invert=False)
        spatial.mirror(image, seg, params.mirror)
        return image, seg

    def __call__(self, image: Tensor, seg: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sample parameters from ``generator`` and apply them."""
        params = self.sample_params(image.shape[0], generator, num_channels=image.shape[1])
        return self.apply(image, seg, params)


def _symmetric_degrees(degrees: float) -> Range:
    return (-math.radians(degrees), math.radians(degrees))
