"""The cascade's extra input: a first stage's segmentation on the next stage's preprocessed grid, one-hot.

Both stages crop the same nonzero box and differ only in spacing, so the first stage's probabilities (on its
grid) are resampled linearly to the next stage's grid of that crop and turned into a label map there (argmax,
or regions thresholded and painted: the plan's :class:`~nnseg.labels.LabelScheme`), as nnU-Net resamples its
low-resolution logits for ``predicted_next_stage``. The next stage sees one binary channel per foreground
class (or region) of the scheme (:func:`previous_stage_channels`), appended to the image channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnseg.errors import NnsegError
from nnseg.io import Geometry
from nnseg.labels import LabelScheme
from nnseg.planning.plan import ConfigurationPlan, Plan
from nnseg.preprocessing.preprocess import CaseProperties, target_spacing_for
from nnseg.preprocessing.resample import interpolate_linear, new_shape_for, resampled_argmax, separate_axis

#: dtype of a stored previous-stage segmentation (label values of the plan's files)
STAGE_SEGMENTATION_DTYPE = np.int16


def stage_shape(properties: CaseProperties, plan: Plan, config: ConfigurationPlan) -> tuple[int, ...]:
    """The spatial shape ``config``'s preprocessing gives the case ``properties`` describes (any configuration)."""
    spacing = tuple(float(properties.original_spacing[a]) for a in plan.transpose_forward)
    return new_shape_for(properties.shape_after_crop, spacing, target_spacing_for(config, spacing))


def segmentation_for_stage(
    probabilities: torch.Tensor, properties: CaseProperties, plan: Plan, config: ConfigurationPlan
) -> np.ndarray:
    """Probabilities ``(outputs, *spatial)`` on the grid of ``properties`` -> label map on ``config``'s grid.

    Softmax: the argmax of the linearly resampled probabilities, slab by slab; regions: each region's
    resampled probability thresholded and painted in ``regions_class_order``. Values are file label values.
    """
    shape = stage_shape(properties, plan, config)
    axis = separate_axis(properties.spacing, config.spacing, config.resampling)
    scheme = plan.scheme
    probabilities = probabilities.float().cpu()
    if scheme.has_regions:
        same = tuple(probabilities.shape[1:]) == shape
        resampled = probabilities if same else interpolate_linear(probabilities, shape, axis)
        labels = np.asarray(scheme.segmentation(resampled.numpy()))
    else:
        scores = [(index, probabilities[index]) for index in range(probabilities.shape[0])]
        labels = resampled_argmax(scores, shape, axis=axis, dtype=torch.int16).numpy()
    return labels.astype(STAGE_SEGMENTATION_DTYPE, copy=False)


def previous_stage_channels(seg: torch.Tensor, scheme: LabelScheme, *, dim: int = 0) -> torch.Tensor:
    """Label map -> one float channel per foreground class (or region) of ``scheme``, stacked along ``dim``.

    ``seg`` is a label map without a channel axis (``(*spatial)``, or ``(B, *spatial)`` with ``dim=1``); a voxel
    is 1 in a channel when its value belongs to that class or region. The result is float32 on ``seg``'s device.
    """
    channels = [torch.isin(seg, torch.tensor(values, device=seg.device)) for values in scheme.foreground.values()]
    return torch.stack(channels, dim).float()


class StoredStage:
    """A cascade's first stage replaced by its stored segmentations on the cascade's grid (case id -> ``.npy``):
    the first stage's cross-validation predictions, which the cascade's final validation uses as nnU-Net does
    (the first stage's other folds were trained on those cases). Stands in for the first stage's
    :class:`~nnseg.inference.predictor.Predictor` (``previous=``)."""

    def __init__(self, config_plan: ConfigurationPlan, files: Mapping[str, Path]) -> None:
        self.config_plan = config_plan
        self.files = dict(files)
        #: no checkpoints behind it (a predictor lists its own)
        self.sources: list[Any] = []
        self.on_warning: Callable[[str], None] = _ignore

    def stage_segmentation(
        self, images: np.ndarray, geometry: Geometry, config: ConfigurationPlan, *, case_id: str = "case"
    ) -> np.ndarray:
        """The stored segmentation of ``case_id`` (``images`` and ``geometry`` are not used)."""
        if case_id not in self.files:
            raise NnsegError(f"{case_id}: no stored {self.config_plan.name} segmentation (train that stage's folds)")
        return np.load(self.files[case_id])


def _ignore(message: str) -> None:
    pass
