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

Modules: :mod:`.spatial` (steps 1 and 9, :func:`center_crop`, :func:`sampling_patch_size`),
:mod:`.intensity` (steps 2-8), :mod:`.pipeline` (:class:`TrainingAugmentation`, :class:`AugmentationParams`).

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

from nnseg.training.augment.intensity import (
    add_noise,
    adjust_contrast,
    adjust_gamma,
    blur,
    scale_brightness,
    simulate_low_resolution,
)
from nnseg.training.augment.pipeline import AugmentationParams, TrainingAugmentation
from nnseg.training.augment.spatial import (
    ANISOTROPY_THRESHOLD,
    SAMPLING_SCALE_RANGE,
    affine_theta,
    center_crop,
    mirror,
    sampling_patch_size,
    spatial_transform,
)

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "SAMPLING_SCALE_RANGE",
    "AugmentationParams",
    "TrainingAugmentation",
    "add_noise",
    "adjust_contrast",
    "adjust_gamma",
    "affine_theta",
    "blur",
    "center_crop",
    "mirror",
    "sampling_patch_size",
    "scale_brightness",
    "simulate_low_resolution",
    "spatial_transform",
]
