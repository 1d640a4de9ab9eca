"""plans.json: the single source of truth for preprocessing, training and inference.

The schema is this module: frozen dataclasses with a docstring per field. Loading goes
through :func:`nnseg.schema.load_dataclass` (types, keys) and :meth:`Plan.validate`
(consistency), so a broken or hand-edited plans file fails with a message that names
the field.

Axis order: ``spacing``, ``median_shape`` and ``patch_size`` of a configuration are in
*planning order*: array order ``(k, j, i)`` permuted by ``transpose_forward`` (coarsest
axis first). 2D configurations list the two in-plane axes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nnseg.errors import NnsegError
from nnseg.labels import LabelError, LabelScheme, Objective
from nnseg.networks.plans import AnyNetworkPlan
from nnseg.planning.presets import PlannerPreset
from nnseg.schema import SchemaError, load_dataclass, read_json, write_json_atomic

#: 2: ``regions_class_order`` and ``objective`` (the label scheme, :mod:`nnseg.labels`).
PLAN_SCHEMA_VERSION = 2
#: Largest training patch accepted, in voxels (512^3 in 3D, 4096^2 in 2D): far above any plan nnseg or nnU-Net
#: makes, but it stops a hand-edited plans.json from allocating terabytes.
MAX_PATCH_VOXELS = {2: 4096**2, 3: 512**3}
NormalizationScheme = Literal["ct", "zscore", "none", "rescale_to_0_1", "rgb_to_0_1"]
#: The cascade: the low-resolution first stage and the full-resolution stage that takes its segmentation as input.
LOWRES_CONFIGURATION = "3d_lowres"
CASCADE_CONFIGURATION = "3d_cascade_fullres"


class PlanError(NnsegError):
    """plans.json is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ChannelNormalization:
    """How one input channel is normalized.

    Attributes:
        channel: channel name from dataset.json.
        scheme: "ct" (clip to ``clip_low``..``clip_high``, subtract ``mean``, divide by ``std``, dataset-wide),
            "zscore" (per image), "none", "rescale_to_0_1" (per image min/max), "rgb_to_0_1" (divide by 255).
        use_nonzero_mask: z-score only inside the nonzero mask and leave the outside at 0.
        clip_low / clip_high: foreground 0.5 / 99.5 percentiles (CT only).
        mean / std: foreground mean and standard deviation (CT only).
    """

    channel: str
    scheme: NormalizationScheme
    use_nonzero_mask: bool
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None

    @property
    def is_ct(self) -> bool:
        """Hounsfield units (the "ct" scheme): air lies below ``nnseg.cropping.AIR_HU``."""
        return self.scheme == "ct"


@dataclass(frozen=True)
class ResamplingPlan:
    """How images, labels and predicted probabilities are resampled.

    Attributes:
        image_order: spline order for images (3).
        label_order: order for labels, applied to a one-hot encoding (1: linear, never invents labels).
        probabilities_order: order for softmax probabilities when exporting predictions.
        separate_axis_order: order along the coarse axis when it is resampled separately (0).
        separate_axis_threshold: resample the coarse axis separately when its spacing exceeds
            this multiple of the finest axis' spacing (3).
        force_separate_axis: always (True) / never (False) resample the coarse axis separately; None decides
            from the spacing.
    """

    image_order: int = 3
    label_order: int = 1
    probabilities_order: int = 1
    separate_axis_order: int = 0
    separate_axis_threshold: float = 3.0
    force_separate_axis: bool | None = None


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration (2d, 3d_fullres, 3d_lowres): data geometry, patch, batch and network.

    Attributes:
        name: configuration name.
        dimensions: 2 or 3.
        data_identifier: names the preprocessed data folder (configurations with equal spacing could share it).
        spacing: target voxel size in mm, planning order.
        median_shape: median image shape after cropping and resampling to ``spacing``, planning order.
        patch_size: training patch, planning order; divisible by the product of the strides per axis.
        batch_size: patches per training step.
        batch_dice: compute the Dice loss over the whole batch (True) or per sample.
        network: the network: an architecture's plan (see :mod:`nnseg.networks.plans`).
        normalization: one entry per input channel, channel order.
        resampling: resampling orders.
        budget_used: fraction of the preset's budget the plan uses at this batch size (<= 1 when it fits).
        previous_stage / next_stage: cascade links (3d_lowres -> 3d_cascade_fullres). A configuration with a
            ``previous_stage`` takes that stage's segmentation (one-hot, one channel per foreground class or
            region of the label scheme) as extra input channels (:meth:`Plan.input_channels`).
    """

    name: str
    dimensions: Literal[2, 3]
    data_identifier: str
    spacing: tuple[float, ...]
    median_shape: tuple[float, ...]
    patch_size: tuple[int, ...]
    batch_size: int
    batch_dice: bool
    network: AnyNetworkPlan
    normalization: tuple[ChannelNormalization, ...]
    resampling: ResamplingPlan
    budget_used: float
    previous_stage: str | None = None
    next_stage: str | None = None

    @property
    def is_ct(self) -> bool:
        """Every channel is CT (the one rule for "is this CT": the body crop and ``--skip-air`` follow it)."""
        return bool(self.normalization) and all(n.is_ct for n in self.normalization)


@dataclass(frozen=True)
class Plan:
    """Everything training and inference need to know, per configuration.

    Attributes:
        schema_version: version of this schema.
        nnseg_version: nnseg version that planned.
        dataset_name: from dataset.json.
        dataset_root: the raw dataset folder the plan was made from (``nnseg preprocess --dataset`` overrides it).
        preset: the preset's name.
        preset_values: every constant the planner used.
        channel_names: input channels, in order.
        labels: label name -> value (or tuple of values for a region), as in dataset.json (``ignore``: the
            value of unannotated voxels).
        regions_class_order: with regions, the label value each region paints back (dataset.json's).
        objective: what the network trains: "softmax" over label values, or "sigmoid" per region
            (decided by the labels, recorded so that the plan says it).
        num_training_cases: cases the plan was made from.
        transpose_forward: array axes in planning order (coarsest axis first).
        transpose_backward: inverse permutation of ``transpose_forward``.
        original_median_spacing: median voxel size of the raw data, planning order.
        original_median_shape: median shape after cropping of the raw data, planning order.
        configurations: name -> configuration.
    """

    schema_version: int
    nnseg_version: str
    dataset_name: str
    dataset_root: str
    preset: str
    preset_values: PlannerPreset
    channel_names: tuple[str, ...]
    labels: dict[str, int | tuple[int, ...]]
    num_training_cases: int
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    original_median_spacing: tuple[float, ...]
    original_median_shape: tuple[float, ...]
    configurations: dict[str, ConfigurationPlan]
    regions_class_order: tuple[int, ...] | None = None
    objective: Objective = "softmax"

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme (labels, regions and their order, ignore label); PlanError when inconsistent."""
        try:
            return LabelScheme(self.labels, self.regions_class_order).validated()
        except LabelError as exc:
            raise PlanError(f"labels: {exc}") from None

    @property
    def num_classes(self) -> int:
        """Network outputs: one per label value but ignore (softmax), or one per region (sigmoid)."""
        return self.scheme.num_outputs

    def configuration(self, name: str) -> ConfigurationPlan:
        """The named configuration, or a PlanError listing the available ones."""
        if name not in self.configurations:
            raise PlanError(f"configuration {name!r} is not in the plan; available: {', '.join(self.configurations)}")
        return self.configurations[name]

    def input_channels(self, configuration: str) -> int:
        """Network input channels of a configuration: the image channels, plus, for a cascade stage, one
        channel per foreground class (or region) of the previous stage's segmentation."""
        config = self.configuration(configuration)
        extra = len(self.scheme.foreground) if config.previous_stage is not None else 0
        return len(self.channel_names) + extra

    def validate(self) -> None:
        """Check the plan's internal consistency; raise PlanError naming the first bad field."""
        if self.schema_version not in (1, PLAN_SCHEMA_VERSION):  # 1: no regions_class_order/objective (softmax)
            raise PlanError(
                f"schema_version {self.schema_version} is not supported (expected {PLAN_SCHEMA_VERSION}); "
                "re-run nnseg plan"
            )
        if self.schema_version == 1 and any(isinstance(v, tuple) for v in self.labels.values()):
            raise PlanError(
                "schema_version 1 plans of region labels trained a softmax over the file labels, not nnU-Net's "
                "region objective; re-run nnseg plan (and train again)"
            )
        scheme = self.scheme
        if self.objective != scheme.objective:
            raise PlanError(
                f"objective is {self.objective!r} but the labels {'declare' if scheme.has_regions else 'have no'} "
                f"regions, which train with {scheme.objective!r}; re-run nnseg plan"
            )
        if sorted(self.transpose_forward) != [0, 1, 2]:
            raise PlanError(f"transpose_forward must be a permutation of 0, 1, 2; got {list(self.transpose_forward)}")
        if [self.transpose_forward[i] for i in self.transpose_backward] != [0, 1, 2]:
            raise PlanError("transpose_backward is not the inverse of transpose_forward")
        if not self.configurations:
            raise PlanError("configurations is empty")
        for name, config in self.configurations.items():
            _validate_configuration(self, name, config)

    def save(self, path: str | os.PathLike) -> Path:
        """Validate, then write atomically."""
        self.validate()
        return write_json_atomic(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """Read and validate a plans.json; errors name the file and the field."""
        data = read_json(path, "plans file")
        try:
            plan = load_dataclass(cls, data)
            plan.validate()
        except (SchemaError, PlanError) as exc:
            raise PlanError(f"{path}: invalid plans file: {exc}") from None
        return plan


def _validate_configuration(plan: Plan, name: str, config: ConfigurationPlan) -> None:
    where = f"configurations.{name}"
    dims = config.dimensions
    net = config.network
    if config.name != name:
        raise PlanError(f"{where}.name is {config.name!r}, expected {name!r}")
    for field_name in ("spacing", "median_shape", "patch_size"):
        value = getattr(config, field_name)
        if len(value) != dims:
            raise PlanError(f"{where}.{field_name} needs {dims} values, got {list(value)}")
        if not all(math.isfinite(v) and v > 0 for v in value):
            raise PlanError(f"{where}.{field_name} must hold positive finite numbers, got {list(value)}")
    if math.prod(config.patch_size) > MAX_PATCH_VOXELS[dims]:
        raise PlanError(
            f"{where}.patch_size {list(config.patch_size)} has {math.prod(config.patch_size):,} voxels, "
            f"more than any accelerator can train ({MAX_PATCH_VOXELS[dims]:,}); re-run nnseg plan or "
            "choose a smaller patch"
        )
    if config.batch_size < 1:
        raise PlanError(f"{where}.batch_size must be >= 1, got {config.batch_size}")
    if len(config.normalization) != len(plan.channel_names):
        raise PlanError(
            f"{where}.normalization has {len(config.normalization)} entries for {len(plan.channel_names)} channels"
        )
    for index, norm in enumerate(config.normalization):
        for bound in ("clip_low", "clip_high", "mean", "std"):
            number = getattr(norm, bound)
            if number is not None and not math.isfinite(number):
                raise PlanError(f"{where}.normalization[{index}].{bound} must be a finite number, got {number}")
        if norm.scheme == "ct" and None in (norm.clip_low, norm.clip_high, norm.mean, norm.std):
            raise PlanError(f"{where}.normalization[{index}]: scheme ct needs clip_low, clip_high, mean and std")
        if norm.scheme == "ct" and norm.std is not None and norm.std <= 0:
            raise PlanError(f"{where}.normalization[{index}].std must be positive, got {norm.std}")
    for problem in net.problems():
        raise PlanError(f"{where}.network.{problem}")
    if net.dims != dims:
        raise PlanError(f"{where}.network.kernel_sizes[0] must hold {dims} values, got {list(net.kernel_sizes[0])}")
    for axis in range(dims):
        divisor = math.prod(s[axis] for s in net.strides)
        if config.patch_size[axis] % divisor:
            raise PlanError(
                f"{where}.patch_size[{axis}] = {config.patch_size[axis]} must be divisible by "
                f"{divisor} (the product of the strides along that axis)"
            )
    for link in (config.previous_stage, config.next_stage):
        # plans made before the cascade was trainable name 3d_cascade_fullres without planning it
        if link is not None and link not in plan.configurations and link != CASCADE_CONFIGURATION:
            raise PlanError(f"{where} links to unknown configuration {link!r}")
    if config.previous_stage is not None:
        previous = plan.configurations[config.previous_stage]
        if dims != 3 or previous.dimensions != 3:
            raise PlanError(f"{where}.previous_stage: a cascade links 3D configurations, got {previous.name!r}")
        if previous.next_stage != name:
            raise PlanError(
                f"{where}.previous_stage is {previous.name!r}, whose next_stage is {previous.next_stage!r}, not "
                f"{name!r}; re-run nnseg plan"
            )
