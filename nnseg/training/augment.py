"""nnU-Net v2's default training augmentation as batched torch ops on the training device.

The pipeline follows ``nnUNetTrainer.get_training_transforms`` (batchgeneratorsv2), in its order:

1. spatial: rotation (p 0.2) and scaling (p 0.2), one ``affine_grid`` + ``grid_sample`` for the
   samples that need it, which also crops the larger sampled region to the patch (center crop);
   the others are cropped without interpolation
2. Gaussian noise (p 0.1)            3. Gaussian blur (p 0.2; per channel p 0.5)
4. multiplicative brightness (p 0.15) 5. contrast (p 0.15)
6. simulate low resolution (p 0.25; per channel p 0.5)
7. inverted gamma (p 0.1)            8. gamma (p 0.3)
9. mirroring (p 0.5 per axis)

Randomness is drawn in one place: :meth:`TrainingAugmentation.sample_params` turns a
``torch.Generator`` into explicit per-sample parameters (:class:`AugmentationParams`);
:meth:`TrainingAugmentation.apply` is deterministic given those parameters. Every step is
vectorised over the batch: a per-sample Bernoulli draw selects the samples (or sample/channel
pairs) a step touches, and only those are computed, so a sample that draws no augmentation
comes out bit-identical to a center crop of its input.

Tensors: ``image`` is ``(B, C, *spatial)`` floating point, ``seg`` is ``(B, S, *spatial)``
integer (``S`` is 1 for a label map), 2D or 3D spatial, axes in array order as everywhere in
nnseg. The input spatial size may exceed the patch size (the data loader samples a larger
region, see :func:`sampling_patch_size`); the output is always ``patch_size``.

Differences from nnU-Net (batchgeneratorsv2), all deliberate:

- segmentations are resampled nearest by default; nnU-Net's linear one-hot scheme is
  ``seg_interpolation="linear"``;
- rotations are rigid in voxel space; nnU-Net rotates normalized grid coordinates, which also
  shears when the sampled region is not a cube;
- anisotropic ("dummy 2D") patches are rotated in-plane with a 3D matrix that leaves axis 0
  alone, rather than by folding slices into channels: the same sampling;
- elastic deformation (off in nnU-Net's default) is not implemented;
- the -1 -> 0 relabelling, masking, region conversion and deep-supervision downsampling that
  follow augmentation in nnU-Net's pipeline are the caller's business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

#: Anisotropy above which nnU-Net augments 3D patches slice-wise ("dummy 2D"): max(patch) / patch[0] > 3.
ANISOTROPY_THRESHOLD = 3.0
#: Scale range nnU-Net uses when it enlarges the sampled region (not the training scale range; kept for parity).
SAMPLING_SCALE_RANGE = (0.85, 1.25)

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentationParams:
    """One draw of every random quantity of :class:`TrainingAugmentation`, per sample (CPU tensors).

    ``B`` is the batch size, ``C`` the number of image channels, ``D`` the number of spatial axes.
    Values where a step is not applied are neutral (angle 0, factor 1) but the masks decide.

    Attributes:
        rotate: ``(B,)`` bool, sample is rotated.
        angles: ``(B, R)`` radians, one per rotation axis (``R`` = 1 in 2D).
        scale: ``(B,)`` bool, sample is scaled.
        scales: ``(B,)`` coordinate scale factor (> 1 samples a larger region: objects shrink).
        noise: ``(B,)`` bool, Gaussian noise is added.
        noise_std: ``(B,)`` standard deviation of the noise.
        noise_seed: seeds the generator that draws the noise field in :meth:`TrainingAugmentation.apply`.
        blur: ``(B, C)`` bool, channel is blurred.
        blur_sigma: ``(B, C, D)`` Gaussian sigma in voxels, per axis.
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
    """nnU-Net v2's default training augmentation, batched; see the module docstring for the order.

    Probabilities are per sample unless named per channel; defaults are nnU-Net's.

    Args:
        patch_size: output spatial size (array order); 2 or 3 axes.
        rotation_range: angle range in radians, sampled uniformly per rotation axis (±30° = ±pi/6;
            nnU-Net uses ±180° for anisotropic 3D patches and for near-square 2D patches, ±15° for
            elongated 2D patches: :meth:`for_patch_size` picks these).
        rotation_axes: 3D only: the axes rotated *about* (all three by default; ``(0,)`` rotates
            in-plane only, as nnU-Net's "dummy 2D" augmentation of anisotropic data). Rotations
            compose in this order. 2D rotates in-plane; leave it None.
        p_rotation: probability of a rotation (0.2); a rotated sample gets an angle on every rotation axis.
        scaling_range: uniform range of the coordinate scale factor (0.7, 1.4), one factor for all axes;
            larger values zoom out.
        scale_axes: axes the factor applies to (all by default; nnU-Net scales in-plane only in dummy 2D).
        p_scaling: probability of scaling (0.2).
        interpolation: image resampling, "linear" (nnU-Net v2) or "cubic" (2D only: grid_sample has no
            tricubic mode).
        seg_interpolation: "nearest" (default; never invents a label) or "linear": nnU-Net v2's scheme of
            resampling the one-hot encoding linearly and taking the argmax (also never invents a label;
            smoother borders, one host sync for the label set, memory x number of labels).
        seg_border_value: label written where the transform samples outside the input (0: background;
            nnU-Net ends up with 0 there too after its -1 -> 0 relabelling). Images are padded with 0.
        p_noise: probability of additive Gaussian noise (0.1).
        noise_std_range: uniform range of the noise standard deviation (0, 0.1). nnU-Net calls this
            ``noise_variance`` but uses the value as the standard deviation; so does nnseg. One noise
            field is shared by all channels of a sample, as in nnU-Net.
        p_blur: probability of Gaussian blur (0.2); p_blur_per_channel: then per channel (0.5).
        blur_sigma_range: uniform range of sigma in voxels (0.5, 1.0), drawn per channel and axis; the
            kernel is truncated at nnU-Net's size (about 6 sigma) and the border reflected.
        p_brightness: probability of a multiplicative brightness change (0.15).
        brightness_range: multiplier range (0.75, 1.25), per channel.
        p_contrast: probability of a contrast change (0.15).
        contrast_range: factor range (0.75, 1.25) per channel; ``(x - mean) * f + mean``, clipped to the
            channel's original min/max (preserve range).
        p_low_res: probability of simulating low resolution (0.25); p_low_res_per_channel: then per channel (0.5).
        low_res_zoom_range: uniform zoom range (0.5, 1.0), same for all axes: nearest-exact downsampling
            to ``round(n * zoom)`` then linear upsampling back.
        low_res_ignore_axes: axes not downsampled (nnU-Net: the out-of-plane axis in dummy 2D).
        p_gamma_inverted: probability of gamma on the inverted image (0.1).
        p_gamma: probability of gamma on the image (0.3).
        gamma_range: exponent range (0.7, 1.5), per channel; the channel is rescaled to [0, 1], raised to
            the power and mapped back; mean and standard deviation are then restored (retain stats).
        mirror_axes: spatial axes that may be flipped (all by default); p_mirror: per axis (0.5).

    Brightness, contrast and gamma factors are drawn as nnU-Net's ``BGContrast``: with probability 0.5
    uniformly below 1 (``[low, 1)``), otherwise uniformly in ``[max(low, 1), high)``.
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
        self.patch_size = _check_patch_size(patch_size)
        dims = len(self.patch_size)
        all_axes = tuple(range(dims))
        if dims == 2 and rotation_axes is not None:
            raise ValueError("2D patches rotate in-plane; leave rotation_axes unset")
        self.rotation_axes = all_axes if rotation_axes is None else _check_axes(rotation_axes, dims, "rotation_axes")
        self.scale_axes = all_axes if scale_axes is None else _check_axes(scale_axes, dims, "scale_axes")
        self.mirror_axes = all_axes if mirror_axes is None else _check_axes(mirror_axes, dims, "mirror_axes")
        self.low_res_ignore_axes = _check_axes(low_res_ignore_axes, dims, "low_res_ignore_axes")
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
            "p_rotation": p_rotation, "p_scaling": p_scaling, "p_noise": p_noise, "p_blur": p_blur,
            "p_blur_per_channel": p_blur_per_channel, "p_brightness": p_brightness, "p_contrast": p_contrast,
            "p_low_res": p_low_res, "p_low_res_per_channel": p_low_res_per_channel,
            "p_gamma_inverted": p_gamma_inverted, "p_gamma": p_gamma, "p_mirror": p_mirror,
        }
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.p_rotation = p_rotation
        self.p_scaling = p_scaling
        self.p_noise = p_noise
        self.p_blur = p_blur
        self.p_blur_per_channel = p_blur_per_channel
        self.p_brightness = p_brightness
        self.p_contrast = p_contrast
        self.p_low_res = p_low_res
        self.p_low_res_per_channel = p_low_res_per_channel
        self.p_gamma_inverted = p_gamma_inverted
        self.p_gamma = p_gamma
        self.p_mirror = p_mirror

        self.rotation_range = _check_range(rotation_range, "rotation_range")
        self.scaling_range = _check_range(scaling_range, "scaling_range", positive=True)
        self.noise_std_range = _check_range(noise_std_range, "noise_std_range", non_negative=True)
        self.blur_sigma_range = _check_range(blur_sigma_range, "blur_sigma_range", positive=True)
        self.brightness_range = _check_range(brightness_range, "brightness_range", positive=True)
        self.contrast_range = _check_range(contrast_range, "contrast_range", positive=True)
        self.low_res_zoom_range = _check_range(low_res_zoom_range, "low_res_zoom_range", positive=True)
        if self.low_res_zoom_range[1] > 1:
            raise ValueError(f"low_res_zoom_range must not exceed 1, got {self.low_res_zoom_range}")
        self.gamma_range = _check_range(gamma_range, "gamma_range", positive=True)

    @classmethod
    def for_patch_size(cls, patch_size: tuple[int, ...] | list[int], **overrides: object) -> TrainingAugmentation:
        """Rotation, mirroring and dummy-2D settings as nnU-Net derives them from the patch size.

        2D: ±15° when the patch is elongated (max / min > 1.5), else ±180°. 3D: ±30° about every axis;
        when ``max(patch) / patch[0] > 3`` nnU-Net augments slice-wise instead: ±180° in-plane only
        (about axis 0), scaling in-plane only and no low-resolution simulation along axis 0.
        ``overrides`` replace any keyword of the constructor.
        """
        patch = _check_patch_size(patch_size)
        settings: dict[str, object] = {}
        if len(patch) == 2:
            settings["rotation_range"] = _symmetric_degrees(15.0 if max(patch) / min(patch) > 1.5 else 180.0)
        elif max(patch) / patch[0] > ANISOTROPY_THRESHOLD:
            settings.update(rotation_range=_symmetric_degrees(180.0), rotation_axes=(0,), scale_axes=(1, 2),
                            low_res_ignore_axes=(0,))
        else:
            settings["rotation_range"] = _symmetric_degrees(30.0)
        settings.update(overrides)
        return cls(patch, **settings)  # type: ignore[arg-type]

    @property
    def sampling_patch_size(self) -> tuple[int, ...]:
        """The larger region the data loader should sample so that rotated corners hold data (nnU-Net's rule)."""
        return sampling_patch_size(self.patch_size, max(abs(a) for a in self.rotation_range), self.rotation_axes,
                                   self.scale_axes)

    def sample_params(self, batch_size: int, generator: torch.Generator, *, num_channels: int = 1
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
            rotate=rotate, angles=angles, scale=scale, scales=scales, noise=noise, noise_std=noise_std,
            blur=blur, blur_sigma=blur_sigma, brightness=brightness, brightness_factor=brightness_factor,
            contrast=contrast, contrast_factor=contrast_factor, low_res=low_res, low_res_zoom=low_res_zoom,
            gamma_inverted=gamma_inverted, gamma_inverted_value=gamma_inverted_value, gamma=gamma,
            gamma_value=gamma_value, mirror=mirror,
        )
        return AugmentationParams(noise_seed=noise_seed, **{k: v.cpu() for k, v in params.items()})

    def apply(self, image: Tensor, seg: Tensor, params: AugmentationParams) -> tuple[Tensor, Tensor]:
        """Augment a batch with explicit parameters; deterministic. Inputs are not modified.

        Returns:
            (image ``(B, C, *patch_size)``, seg ``(B, S, *patch_size)``), on the input's device and dtypes.
        """
        _check_batch(image, seg, self.patch_size)
        if params.batch_size != image.shape[0] or params.num_channels != image.shape[1]:
            raise ValueError(f"params were sampled for batch {params.batch_size} x {params.num_channels} channels; "
                             f"image has {image.shape[0]} x {image.shape[1]}")
        if params.mirror.shape[1] != len(self.patch_size):
            raise ValueError(f"params were sampled for {params.mirror.shape[1]}D patches, this augmentation is "
                             f"{len(self.patch_size)}D")
        image, seg = self._spatial(image, seg, params)
        self._noise(image, params)
        self._blur(image, params)
        self._brightness(image, params)
        self._contrast(image, params)
        self._low_res(image, params)
        self._gamma(image, params.gamma_inverted, params.gamma_inverted_value, invert=True)
        self._gamma(image, params.gamma, params.gamma_value, invert=False)
        self._mirror(image, seg, params)
        return image, seg

    def __call__(self, image: Tensor, seg: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sample parameters from ``generator`` and apply them."""
        params = self.sample_params(image.shape[0], generator, num_channels=image.shape[1])
        return self.apply(image, seg, params)

    # --- steps -----------------------------------------------------------------------------------------

    def _spatial(self, image: Tensor, seg: Tensor, params: AugmentationParams) -> tuple[Tensor, Tensor]:
        in_shape = image.shape[2:]
        crop = _center_crop_slices(in_shape, self.patch_size)
        out_image = image[(slice(None), slice(None), *crop)].clone(memory_format=torch.contiguous_format)
        out_seg = seg[(slice(None), slice(None), *crop)].clone(memory_format=torch.contiguous_format)
        index = _indices(params.spatial, image.device)
        if index is None:
            return out_image, out_seg
        subset = params.spatial
        theta = self._theta(params.angles[subset], params.scales[subset], tuple(in_shape))
        theta = theta.to(device=image.device, dtype=torch.float64 if image.dtype == torch.float64 else torch.float32)
        grid = _affine_grid(theta, self.patch_size)
        mode = "bilinear" if self.interpolation == "linear" else "bicubic"
        every = index.numel() == image.shape[0]  # no gathered copy of the (large) input when all samples move
        out_image[index] = F.grid_sample(image if every else image[index], grid.to(image.dtype), mode=mode,
                                         padding_mode="zeros", align_corners=False)
        out_seg[index] = self._resample_seg(seg if every else seg[index], grid)
        return out_image, out_seg

    def _theta(self, angles: Tensor, scales: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """``(N, D, D + 1)`` affine_grid matrices: output patch (normalized) -> input region (normalized).

        In voxel units centered on the patch, input = rotation @ scaling @ output + shift; the shift
        aligns the patch center with the center crop used for untransformed samples.
        """
        dims = len(self.patch_size)
        n = angles.shape[0]
        matrix = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
        if dims == 2:
            matrix = _plane_rotation(angles[:, 0], 0, 1, dims)
        else:
            for column, axis in enumerate(self.rotation_axes):
                first, second = (a for a in range(3) if a != axis)
                matrix = matrix @ _plane_rotation(angles[:, column], first, second, dims)
        axis_scales = torch.ones(n, dims, dtype=torch.float64)
        axis_scales[:, list(self.scale_axes)] = scales[:, None].to(torch.float64)
        matrix = matrix * axis_scales[:, None, :]
        size_in = torch.tensor(in_shape, dtype=torch.float64)
        size_out = torch.tensor(self.patch_size, dtype=torch.float64)
        linear = matrix * size_out[None, None, :] / size_in[None, :, None]
        shift = torch.tensor([(s - p) // 2 - (s - p) / 2 for s, p in zip(in_shape, self.patch_size)],
                             dtype=torch.float64)
        translation = (2 * shift / size_in).expand(n, dims)
        # affine_grid orders coordinates x, y(, z) = last array axis first
        linear = linear.flip(-1).flip(-2)
        translation = translation.flip(-1)
        return torch.cat([linear, translation[:, :, None]], dim=2)

    def _resample_seg(self, seg: Tensor, grid: Tensor) -> Tensor:
        border = self.seg_border_value
        if self.seg_interpolation == "nearest":
            # float32 holds every label exactly (|label| < 2 ** 24); nearest sampling copies values, so
            # shifting by the border value makes the zero padding read as the border label
            values = seg.to(grid.dtype)
            if border:
                values -= border
            out = F.grid_sample(values, grid, mode="nearest", padding_mode="zeros", align_corners=False)
            if border:
                out += border
            return out.to(seg.dtype)
        labels = torch.unique(seg)
        n, channels = seg.shape[:2]
        spatial = seg.shape[2:]
        one_hot = (seg.unsqueeze(2) == labels.view(1, 1, -1, *[1] * len(spatial))).to(grid.dtype)
        sampled = F.grid_sample(one_hot.flatten(1, 2), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False).view(n, channels, labels.numel(), *self.patch_size)
        outside = (1 - sampled.sum(2, keepdim=True)).clamp_min(0)
        values = torch.cat([labels, labels.new_tensor([border])])
        return values[torch.cat([sampled, outside], dim=2).argmax(2)].to(seg.dtype)

    def _noise(self, image: Tensor, params: AugmentationParams) -> None:
        index = _indices(params.noise, image.device)
        if index is None:
            return
        generator = torch.Generator(device=image.device)
        generator.manual_seed(params.noise_seed)
        field = torch.randn((index.numel(), 1, *image.shape[2:]), generator=generator, device=image.device,
                            dtype=image.dtype)
        std = params.noise_std[params.noise].to(image.device, image.dtype)
        image[index] += field * _expand(std, image.ndim)

    def _blur(self, image: Tensor, params: AugmentationParams) -> None:
        pairs = params.blur.nonzero()
        if pairs.numel() == 0:
            return
        b, c = pairs[:, 0].to(image.device), pairs[:, 1].to(image.device)
        sigmas = params.blur_sigma[params.blur]  # (N, D)
        x = image[b, c]
        for axis in range(len(self.patch_size)):
            x = _blur_axis(x, sigmas[:, axis], axis)
        image[b, c] = x

    def _brightness(self, image: Tensor, params: AugmentationParams) -> None:
        index = _indices(params.brightness, image.device)
        if index is None:
            return
        factor = params.brightness_factor[params.brightness].to(image.device, image.dtype)
        image[index] *= _expand(factor, image.ndim, leading=2)

    def _contrast(self, image: Tensor, params: AugmentationParams) -> None:
        index = _indices(params.contrast, image.device)
        if index is None:
            return
        x = image[index]
        flat = x.flatten(2)
        mean = _expand(flat.mean(-1), x.ndim, leading=2)
        low, high = (_expand(v, x.ndim, leading=2) for v in flat.aminmax(dim=-1))
        factor = _expand(params.contrast_factor[params.contrast].to(image.device, image.dtype), x.ndim, leading=2)
        image[index] = torch.clamp((x - mean) * factor + mean, low, high)

    def _low_res(self, image: Tensor, params: AugmentationParams) -> None:
        pairs = params.low_res.nonzero()
        if pairs.numel() == 0:
            return
        b, c = pairs[:, 0].to(image.device), pairs[:, 1].to(image.device)
        zoom = params.low_res_zoom[params.low_res]  # (N,)
        x = image[b, c]
        for axis in range(len(self.patch_size)):
            if axis not in self.low_res_ignore_axes:
                x = _low_res_axis(x, zoom, axis)
        image[b, c] = x

    def _gamma(self, image: Tensor, mask: Tensor, exponent: Tensor, *, invert: bool) -> None:
        """nnU-Net's gamma with retained stats, per channel; ``invert`` applies it to ``-image``.

        Algebraically folded so that the image is read a few times only: with ``u`` the channel rescaled
        to [0, 1] (``(x - min) / range``, or ``(max - x) / range`` when inverted) and ``q = u ** gamma``,
        nnU-Net's result is ``sign * (q - mean(q)) * std(x) / std(q) + mean(x)`` (``sign`` = -1 when inverted),
        up to its 1e-7 guards on range and standard deviation, which are kept.
        """
        index = _indices(mask, image.device)
        if index is None:
            return
        x = image[index]
        shape = (x.shape[0], x.shape[1], *[1] * (x.ndim - 2))
        flat = x.flatten(2)
        std, mean = (v.view(shape) for v in torch.std_mean(flat, dim=-1))
        low, high = (v.view(shape) for v in flat.aminmax(dim=-1))
        spread = high - low
        scale = 1 / spread.clamp_min(1e-7)
        q = ((high - x) if invert else (x - low)).mul_(scale)
        q.pow_(exponent[mask].to(image.device, image.dtype).view(shape))
        q_std, q_mean = (v.view(shape) for v in torch.std_mean(q.flatten(2), dim=-1))
        factor = std / (q_std * spread).clamp_min(1e-7) * spread
        if invert:
            factor = -factor
        image[index] = q.sub_(q_mean).mul_(factor).add_(mean)

    def _mirror(self, image: Tensor, seg: Tensor, params: AugmentationParams) -> None:
        # one flip per distinct combination of axes (at most 2 ** D), not one per axis
        for pattern in params.mirror.unique(dim=0):
            dims = [axis + 2 for axis in pattern.nonzero().flatten().tolist()]
            if not dims:
                continue
            index = _indices((params.mirror == pattern).all(1), image.device)
            image[index] = image[index].flip(dims)
            seg[index] = seg[index].flip(dims)


class ValidationTransform:
    """Validation: no augmentation, only the center crop of a larger input to ``patch_size``.

    The result may share memory with the input (when no crop is needed).
    """

    def __init__(self, patch_size: tuple[int, ...] | list[int]) -> None:
        self.patch_size = _check_patch_size(patch_size)

    def __call__(self, image: Tensor, seg: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        """Center-crop ``image`` and ``seg``; ``generator`` is accepted for symmetry and unused."""
        _check_batch(image, seg, self.patch_size)
        crop = (slice(None), slice(None), *_center_crop_slices(image.shape[2:], self.patch_size))
        return image[crop], seg[crop]


def sampling_patch_size(
    patch_size: tuple[int, ...],
    max_angle: float,
    rotation_axes: tuple[int, ...] | None = None,
    scale_axes: tuple[int, ...] | None = None,
    min_scale: float = SAMPLING_SCALE_RANGE[0],
) -> tuple[int, ...]:
    """nnU-Net's ``get_patch_size``: the region to sample before rotation, scaling and center crop.

    The patch's extent vector is rotated by ``min(max_angle, 90°)`` about each rotation axis in turn
    (not jointly), the per-axis maximum of the absolute results is taken, axes that are scaled are
    divided by ``min_scale`` (nnU-Net uses 0.85 here, not the training minimum of 0.7), then floored.
    Axes neither rotated nor scaled keep the patch size (nnU-Net's dummy-2D rule). This is an
    approximation: rotated corners can still fall outside the region and are then padded with zeros.
    """
    dims = len(patch_size)
    rotation_axes = tuple(range(dims)) if rotation_axes is None else rotation_axes
    scale_axes = tuple(range(dims)) if scale_axes is None else scale_axes
    angle = min(abs(max_angle), math.pi / 2)
    extent = [float(p) for p in patch_size]
    # the plane of each rotation, ordered as batchgenerators' rotate_coords_2d/3d: (axis gaining a*cos + b*sin, other)
    planes = [(0, 1)] if dims == 2 else [((axis + 1) % 3, (axis + 2) % 3) for axis in rotation_axes]
    moved: set[int] = set()
    if angle > 0:
        for first, second in planes:
            a, b = patch_size[first], patch_size[second]
            extent[first] = max(extent[first], abs(a * math.cos(angle) + b * math.sin(angle)))
            extent[second] = max(extent[second], abs(-a * math.sin(angle) + b * math.cos(angle)))
            moved.update((first, second))
    for axis in range(dims):
        if axis in scale_axes:
            extent[axis] /= min_scale
        if axis not in moved and axis not in scale_axes:
            extent[axis] = patch_size[axis]
    return tuple(int(e) for e in extent)


# --- helpers ---------------------------------------------------------------------------------------------


def _check_patch_size(patch_size: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) not in (2, 3) or any(p < 1 for p in patch):
        raise ValueError(f"patch_size needs 2 or 3 positive sizes, got {list(patch_size)}")
    return patch


def _check_axes(axes: tuple[int, ...], dims: int, name: str) -> tuple[int, ...]:
    axes = tuple(int(a) for a in axes)
    if any(not 0 <= a < dims for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{name} must be distinct spatial axes in 0..{dims - 1}, got {list(axes)}")
    return axes


def _check_range(bounds: Range, name: str, *, positive: bool = False, non_negative: bool = False) -> Range:
    low, high = (float(v) for v in bounds)
    if low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(bounds)}")
    if positive and low <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(bounds)}")
    if non_negative and low < 0:
        raise ValueError(f"{name} must not be negative, got {tuple(bounds)}")
    return low, high


def _check_batch(image: Tensor, seg: Tensor, patch_size: tuple[int, ...]) -> None:
    dims = len(patch_size)
    if image.ndim != dims + 2:
        raise ValueError(f"image must be (B, C, *spatial) with {dims} spatial axes, got shape {tuple(image.shape)}")
    if not image.dtype.is_floating_point:
        raise ValueError(f"image must be floating point, got {image.dtype}")
    if seg.ndim != image.ndim or seg.shape[0] != image.shape[0] or seg.shape[2:] != image.shape[2:]:
        raise ValueError(f"seg shape {tuple(seg.shape)} does not match image shape {tuple(image.shape)} "
                         "(expected (B, S, *spatial) with the same B and spatial size)")
    if seg.dtype.is_floating_point or seg.dtype == torch.bool or seg.dtype.is_complex:
        raise ValueError(f"seg must be an integer tensor, got {seg.dtype}")
    if seg.device != image.device:
        raise ValueError(f"image is on {image.device} but seg is on {seg.device}")
    if any(s < p for s, p in zip(image.shape[2:], patch_size)):
        raise ValueError(f"input spatial size {tuple(image.shape[2:])} is smaller than patch_size {patch_size}")


def _center_crop_slices(in_shape: tuple[int, ...] | torch.Size, patch_size: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice((s - p) // 2, (s - p) // 2 + p) for s, p in zip(in_shape, patch_size))


def _indices(mask: Tensor, device: torch.device) -> Tensor | None:
    """Indices of the True entries of a 1D CPU mask, on ``device``; None when there are none."""
    index = mask.nonzero().flatten()
    return index.to(device) if index.numel() else None


def _expand(values: Tensor, ndim: int, leading: int = 1) -> Tensor:
    """View ``values`` (``leading`` dims) with trailing singleton dims up to ``ndim``."""
    return values.view(*values.shape, *[1] * (ndim - leading))


def _symmetric_degrees(degrees: float) -> Range:
    return (-math.radians(degrees), math.radians(degrees))


def _plane_rotation(angles: Tensor, first: int, second: int, dims: int) -> Tensor:
    """``(N, dims, dims)`` rotations by ``angles`` in the plane of axes ``first`` and ``second``."""
    matrix = torch.eye(dims, dtype=torch.float64).repeat(angles.shape[0], 1, 1)
    cos, sin = torch.cos(angles.to(torch.float64)), torch.sin(angles.to(torch.float64))
    matrix[:, first, first] = cos
    matrix[:, first, second] = -sin
    matrix[:, second, first] = sin
    matrix[:, second, second] = cos
    return matrix


def _affine_grid(theta: Tensor, size: tuple[int, ...]) -> Tensor:
    """``F.affine_grid(theta, (N, 1, *size), align_corners=False)``, built from per-axis terms.

    The grid is affine in each output index, so it is a broadcast sum of ``D`` small tensors plus the
    translation: one full-size write instead of a ``(N, voxels, D + 1) @ (D + 1, D)`` matmul.
    """
    n, dims = theta.shape[0], len(size)
    grid = theta[:, :, dims].reshape(n, *[1] * dims, dims)
    for k in range(dims):  # grid component k is array axis dims - 1 - k
        axis = dims - 1 - k
        base = (torch.arange(size[axis], device=theta.device, dtype=theta.dtype) * 2 + 1) / size[axis] - 1
        shape = [n] + [1] * dims + [dims]
        shape[1 + axis] = size[axis]
        grid = grid + (base[None, :, None] * theta[:, None, :, k]).reshape(shape)
    return grid


def _blur_kernel_radius(sigma: Tensor) -> Tensor:
    """Half-width of nnU-Net's kernel: size = sigma * 6 + 0.5 rounded (half to even) to the nearest odd integer."""
    target = sigma * 6 + 0.5
    rounded = torch.round(target)  # half to even, like Python's round
    odd = rounded.remainder(2) == 1
    size = torch.where(odd, rounded, torch.where(target - rounded >= 0, rounded + 1, rounded - 1))
    return ((size - 1) // 2).to(torch.int64)


def _blur_axis(x: Tensor, sigma: Tensor, axis: int) -> Tensor:
    """Gaussian-blur each of ``x``'s ``N`` volumes ``(N, *spatial)`` along ``axis`` with its own sigma.

    One kernel width for the batch (the largest); each row's kernel is zero beyond its own nnU-Net
    truncation radius, so every volume gets exactly nnU-Net's kernel. Reflect padding.
    """
    radius_each = _blur_kernel_radius(sigma)
    radius = int(radius_each.max())
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].to(torch.float64)) ** 2)
    weights = torch.where(offsets.abs()[None, :] <= radius_each[:, None], weights, 0.0)
    weights = (weights / weights.sum(1, keepdim=True)).to(x.device, x.dtype)
    size = x.shape[axis + 1]
    spatial = x.ndim - 1
    pad = [0, 0] * spatial
    pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = radius
    mode = "reflect" if radius < size else "replicate"
    padded = F.pad(x.unsqueeze(0), pad, mode=mode).squeeze(0)
    out = torch.zeros_like(x)
    for k in range(2 * radius + 1):
        out += _expand(weights[:, k], x.ndim) * padded.narrow(axis + 1, k, size)
    return out


def _low_res_axis(x: Tensor, zoom: Tensor, axis: int) -> Tensor:
    """Along ``axis``: nearest-exact downsampling to ``round(n * zoom)``, then linear upsampling to ``n``.

    Equivalent, per volume, to ``F.interpolate(mode="nearest-exact")`` followed by
    ``F.interpolate(mode="linear")`` (same index arithmetic), but for ``N`` volumes with ``N``
    different zooms at once: each output voxel blends two gathered input voxels.
    """
    n = x.shape[axis + 1]
    low = torch.round(n * zoom.to(torch.float64)).clamp_min(1).to(torch.int64)  # (N,)
    low_f = low.to(torch.float32)[:, None]
    out_index = torch.arange(n, dtype=torch.float32)[None, :]
    # linear upsampling low -> n (align_corners=False), float arithmetic as in torch's kernels
    source = ((low_f / n) * (out_index + 0.5) - 0.5).clamp_min(0)
    lower = torch.minimum(source.floor().to(torch.int64), low[:, None] - 1)
    weight_upper = (source - lower.to(torch.float32)).clamp(0, 1)
    upper = lower + (lower < low[:, None] - 1).to(torch.int64)

    # nearest-exact downsampling n -> low: low-res voxel j holds input voxel floor((j + 0.5) * n / low)
    def nearest(j: Tensor) -> Tensor:
        scale = (torch.tensor(float(n), dtype=torch.float32) / low_f).to(torch.float64)
        return torch.floor(((j.to(torch.float64) + 0.5) * scale).to(torch.float32)).to(torch.int64).clamp_max(n - 1)

    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[axis + 1] = n
    gather_lower = nearest(lower).view(shape).to(x.device)
    gather_upper = nearest(upper).view(shape).to(x.device)
    weight_upper = weight_upper.view(shape).to(x.device, x.dtype)
    picked_lower = torch.gather(x, axis + 1, gather_lower.expand(x.shape))  # expanded index: faster than take_along_dim
    picked_upper = torch.gather(x, axis + 1, gather_upper.expand(x.shape))
    return torch.lerp(picked_lower, picked_upper, weight_upper)
