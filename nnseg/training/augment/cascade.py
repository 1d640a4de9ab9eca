"""Augmentation of a cascade stage's extra input: the previous stage's segmentation, one-hot.

nnU-Net (``nnUNetTrainer.get_training_transforms`` with ``is_cascaded``) moves that segmentation with the
spatial transforms as a label (nearest; here: a second ``seg`` channel of :class:`.TrainingAugmentation`), then
one-hot encodes its foreground classes (:func:`nnseg.preprocessing.cascade.previous_stage_channels`) and, so
that the second stage learns to correct rather than copy the first, per sample:

1. random binary morphology (p 0.4; then per class p 0.5, classes in random order): dilation, erosion, closing
   or opening with a ball of radius 1..8 voxels; voxels a class gains are taken from every other class;
2. removal of one random connected component (p 0.2; then per class p 0.5), among the components that cover
   less than 15 % of the patch; the removed voxels stay empty (nnU-Net's ``fill_with_other_class_p=0``).

Randomness is drawn in :meth:`CascadeAugmentation.sample_params` from a ``torch.Generator``; :meth:`apply` is
deterministic given the parameters. Morphology runs as convolutions on the tensors' device; connected
components are labelled on the CPU (``scipy.ndimage.label``, full connectivity as nnU-Net's skimage labelling).

Differences from nnU-Net, deliberate: the ball radius is a whole number of voxels drawn uniformly in 1..8
(nnU-Net draws a real radius for skimage's ``ball``), and convolutions replace its FFT convolution (same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from nnseg.labels import LabelScheme
from nnseg.preprocessing.cascade import previous_stage_channels
from nnseg.training.augment._common import Range, check_range

#: The binary operations, indexed by :attr:`CascadeParams.operation`.
BINARY_OPERATIONS = ("dilation", "erosion", "closing", "opening")


def ball(radius: int, dims: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean structuring element: the voxels within ``radius`` of the centre, shape ``(2r + 1,) * dims``."""
    if radius < 0 or dims not in (2, 3):
        raise ValueError(f"ball needs radius >= 0 and 2 or 3 dims, got {radius} and {dims}")
    axis = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    grids = torch.meshgrid(*[axis] * dims, indexing="ij")
    return sum(g**2 for g in grids) <= radius**2  # type: ignore[return-value]


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``mask`` ``(N, *spatial)`` (bool, 2 or 3 spatial axes) by a ball; outside counts as 0."""
    dims = mask.ndim - 1
    kernel = ball(radius, dims, mask.device).float()[None, None]
    conv = F.conv3d if dims == 3 else F.conv2d
    return conv(mask[:, None].float(), kernel, padding=radius)[:, 0] > 0.5


def erode(mask: Tensor, radius: int) -> Tensor:
    """Binary erosion by a ball (the dual of :func:`dilate`: outside the tensor counts as foreground)."""
    return ~dilate(~mask, radius)


def binary_operation(mask: Tensor, operation: str, radius: int) -> Tensor:
    """One of :data:`BINARY_OPERATIONS` on ``mask`` ``(N, *spatial)`` bool with a ball of ``radius``."""
    if operation == "dilation":
        return dilate(mask, radius)
    if operation == "erosion":
        return erode(mask, radius)
    if operation == "closing":
        return erode(dilate(mask, radius), radius)
    if operation == "opening":
        return dilate(erode(mask, radius), radius)
    raise ValueError(f"operation must be one of {', '.join(BINARY_OPERATIONS)}, got {operation!r}")


def apply_binary_operations(onehot: Tensor, apply: Tensor, operation: Tensor, radius: Tensor, order: Tensor) -> Tensor:
    """Random morphology per (sample, class) of ``onehot`` ``(B, K, *spatial)``, in place; returns it.

    ``apply``, ``operation`` (index into :data:`BINARY_OPERATIONS`), ``radius`` and ``order`` (a permutation of the
    classes per sample: the order they are changed in) are ``(B, K)`` CPU tensors. Voxels a class gains are
    cleared in every other class, so that no voxel belongs to two classes (nnU-Net's rule).
    """
    for b in range(onehot.shape[0]):
        for c in (int(k) for k in order[b]):
            if not bool(apply[b, c]):
                continue
            before = onehot[b, c] > 0.5
            after = binary_operation(before[None], BINARY_OPERATIONS[int(operation[b, c])], int(radius[b, c]))[0]
            added = after & ~before
            if onehot.shape[1] > 1 and bool(added.any()):
                others = [k for k in range(onehot.shape[1]) if k != c]
                onehot[b, others] = onehot[b, others].masked_fill(added, 0.0)
            onehot[b, c] = after.to(onehot.dtype)
    return onehot


def remove_random_components(onehot: Tensor, apply: Tensor, choice: Tensor, *, max_fraction: float = 0.15) -> Tensor:
    """Remove one random connected component per selected (sample, class) of ``onehot``, in place; returns it.

    Only components smaller than ``max_fraction`` of the patch are candidates (none: nothing changes);
    ``choice`` ``(B, K)`` in [0, 1) picks among them (in label order). Full connectivity (26 in 3D).
    """
    dims = onehot.ndim - 2
    structure = ndimage.generate_binary_structure(dims, dims)
    for b, c in apply.nonzero().tolist():
        mask = (onehot[b, c] > 0.5).cpu().numpy()
        if not mask.any():
            continue
        labels, count = ndimage.label(mask, structure)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        candidates = np.flatnonzero(sizes < mask.size * max_fraction) + 1
        if not len(candidates):
            continue
        chosen = candidates[min(int(float(choice[b, c]) * len(candidates)), len(candidates) - 1)]
        onehot[b, c] = onehot[b, c].masked_fill(torch.from_numpy(labels == chosen).to(onehot.device), 0.0)
    return onehot


@dataclass(frozen=True)
class CascadeParams:
    """One draw of :class:`CascadeAugmentation`'s random quantities, ``(B, K)`` CPU tensors (K: one-hot classes).

    Attributes:
        morphology: apply a binary operation to the class; operation: index into :data:`BINARY_OPERATIONS`;
        radius: ball radius in voxels; order: per sample, the order the classes are changed in.
        remove: remove a connected component of the class; component: uniform [0, 1) choosing which.
    """

    morphology: Tensor
    operation: Tensor
    radius: Tensor
    order: Tensor
    remove: Tensor
    component: Tensor


class CascadeAugmentation:
    """nnU-Net's augmentation of the previous stage's one-hot segmentation (see the module docstring).

    Args:
        p_morphology: per sample (0.4); p_morphology_per_class: then per class (0.5).
        radius_range: ball radius in voxels, whole numbers, inclusive (1, 8).
        p_remove_component: per sample (0.2); p_remove_per_class: then per class (0.5).
        max_component_fraction: only components smaller than this fraction of the patch are removed (0.15).
    """

    def __init__(
        self,
        *,
        p_morphology: float = 0.4,
        p_morphology_per_class: float = 0.5,
        radius_range: Range = (1, 8),
        p_remove_component: float = 0.2,
        p_remove_per_class: float = 0.5,
        max_component_fraction: float = 0.15,
    ) -> None:
        for name, value in {
            "p_morphology": p_morphology,
            "p_morphology_per_class": p_morphology_per_class,
            "p_remove_component": p_remove_component,
            "p_remove_per_class": p_remove_per_class,
            "max_component_fraction": max_component_fraction,
        }.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        low, high = check_range(radius_range, "radius_range", positive=True)
        if low != int(low) or high != int(high):
            raise ValueError(f"radius_range must hold whole numbers of voxels, got {tuple(radius_range)}")
        self.radius_range = (int(low), int(high))
        self.p_morphology, self.p_morphology_per_class = p_morphology, p_morphology_per_class
        self.p_remove_component, self.p_remove_per_class = p_remove_component, p_remove_per_class
        self.max_component_fraction = max_component_fraction

    def sample_params(self, batch_size: int, num_classes: int, generator: torch.Generator) -> CascadeParams:
        """Draw every random quantity for ``batch_size`` samples of ``num_classes`` one-hot channels."""
        b, k = batch_size, num_classes
        device = generator.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=device, dtype=torch.float64)

        morphology = (rand(b, 1) < self.p_morphology) & (rand(b, k) < self.p_morphology_per_class)
        operation = torch.randint(0, len(BINARY_OPERATIONS), (b, k), generator=generator, device=device)
        low, high = self.radius_range
        radius = torch.randint(low, high + 1, (b, k), generator=generator, device=device)
        order = torch.argsort(rand(b, k), dim=1)
        remove = (rand(b, 1) < self.p_remove_component) & (rand(b, k) < self.p_remove_per_class)
        component = rand(b, k)
        return CascadeParams(
            morphology.cpu(), operation.cpu(), radius.cpu(), order.cpu(), remove.cpu(), component.cpu()
        )

    def apply(self, onehot: Tensor, params: CascadeParams) -> Tensor:
        """Augment ``onehot`` ``(B, K, *spatial)`` (float 0/1) with explicit parameters; a new tensor."""
        if tuple(params.morphology.shape) != tuple(onehot.shape[:2]):
            raise ValueError(
                f"params were sampled for {tuple(params.morphology.shape)} (batch, classes); "
                f"onehot has {tuple(onehot.shape[:2])}"
            )
        out = onehot.clone()
        apply_binary_operations(out, params.morphology, params.operation, params.radius, params.order)
        remove_random_components(out, params.remove, params.component, max_fraction=self.max_component_fraction)
        return out

    def __call__(self, onehot: Tensor, generator: torch.Generator) -> Tensor:
        """Sample parameters from ``generator`` and apply them."""
        return self.apply(onehot, self.sample_params(onehot.shape[0], onehot.shape[1], generator))


def append_previous_stage(
    image: Tensor,
    seg: Tensor,
    scheme: LabelScheme,
    augmentation: CascadeAugmentation | None,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """A cascade batch after the spatial augmentation: ``seg`` ``(B, 2, *spatial)`` holds the labels and, in channel 1,
    the previous stage's segmentation. Returns (image with one channel per foreground class or region of
    ``scheme`` appended, augmented by ``augmentation`` unless None; labels ``(B, 1, *spatial)``)."""
    onehot = previous_stage_channels(seg[:, 1], scheme, dim=1)
    if augmentation is not None:
        onehot = augmentation(onehot, generator)
    return torch.cat([image, onehot.to(image.dtype)], 1), seg[:, :1]
