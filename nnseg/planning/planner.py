"""The experiment planner: fingerprint + preset -> Plan. One small function per decision, no I/O.

The decisions reproduce nnU-Net v2.8.1's default ``ExperimentPlanner`` (see
``benchmarks/compare_plans.py`` for the side-by-side check); the constants come from
the preset, so a CPU preset changes the budget, not the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from nnseg.fingerprint import Fingerprint
from nnseg.labels import scheme_from
from nnseg.networks.footprint import CLOSED_FORMS, Footprint
from nnseg.networks.plans import AnyNetworkPlan, NetworkPlan, network_plan_for
from nnseg.networks.topology import Topology, features_per_stage, pool_and_kernel_layout
from nnseg.planning.plan import (
    CASCADE_CONFIGURATION,
    LOWRES_CONFIGURATION,
    PLAN_SCHEMA_VERSION,
    ChannelNormalization,
    ConfigurationPlan,
    NormalizationScheme,
    Plan,
    PlanError,
    ResamplingPlan,
)
from nnseg.planning.presets import FixedPatch, GpuMemoryBudget, PlannerPreset, StepTimeBudget

#: Channel names (case-insensitive) that select a normalization explicitly; anything else is z-score.
CHANNEL_NAME_SCHEMES: dict[str, NormalizationScheme] = {
    "ct": "ct",
    "nonorm": "none",
    "zscore": "zscore",
    "rescale_to_0_1": "rescale_to_0_1",
    "rgb_to_0_1": "rgb_to_0_1",
}
#: Schemes that can restrict themselves to the nonzero mask (leaving the outside at 0).
MASKABLE_SCHEMES = {"zscore"}


def estimate_footprint(plan: NetworkPlan, patch_size: Sequence[int], in_channels: int, num_classes: int) -> Footprint:
    """The footprint of ``plan`` at ``patch_size``: its closed form, else measured on torch's meta device."""
    closed_form = CLOSED_FORMS.get(type(plan))
    if closed_form is not None:
        return closed_form(plan, patch_size, in_channels, num_classes)
    from nnseg.networks.trace import trace  # torch and the builders, only for architectures without a closed form

    return trace(plan, tuple(patch_size), in_channels, num_classes)


def target_spacing(spacings: np.ndarray, shapes: np.ndarray, anisotropy_threshold: float) -> np.ndarray:
    """Median spacing per axis; for a coarse axis with few voxels, its 10th percentile instead.

    When the coarsest axis' median spacing exceeds ``anisotropy_threshold`` times every other
    axis' AND its median size (voxels) times the threshold is below every other axis' size,
    resampling to the median would smear the many thin-slice cases: use the 10th percentile
    of that axis' spacings, but never finer than the other axes' coarsest spacing.
    """
    target = np.percentile(spacings, 50, axis=0)
    target_size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    other_spacing = max(target[a] for a in others)
    anisotropic_spacing = target[worst] > anisotropy_threshold * other_spacing
    few_voxels = target_size[worst] * anisotropy_threshold < min(target_size[a] for a in others)
    if anisotropic_spacing and few_voxels:
        coarse = np.percentile(spacings[:, worst], 10)
        if coarse < other_spacing:
            coarse = max(other_spacing, coarse) + 1e-5
        target[worst] = coarse
    return target


def transpose_for(spacing: Sequence[float] | np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Put the coarsest axis first (first maximum on ties); return (forward, backward) permutations."""
    coarsest = int(np.argmax(spacing))
    forward = (coarsest, *[a for a in range(len(spacing)) if a != coarsest])
    backward = tuple(int(forward.index(a)) for a in range(len(spacing)))
    return forward, backward


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Shape after resampling from ``spacing`` to ``new_spacing`` (rounded to the nearest voxel)."""
    return np.array([int(round(s / n * d)) for s, n, d in zip(spacing, new_spacing, shape)])


def channel_normalization(fingerprint: Fingerprint, nonzero_mask_threshold: float) -> tuple[ChannelNormalization, ...]:
    """Scheme per channel from its name; mask-restricted z-score when cropping shrank the median image enough."""
    use_mask = fingerprint.median_relative_size_after_crop < nonzero_mask_threshold
    result = []
    for name, stats in zip(fingerprint.channel_names, fingerprint.intensity):
        scheme = CHANNEL_NAME_SCHEMES.get(name.casefold(), "zscore")
        if scheme == "ct":
            result.append(
                ChannelNormalization(
                    channel=name,
                    scheme="ct",
                    use_nonzero_mask=False,
                    clip_low=stats.percentile_00_5,
                    clip_high=stats.percentile_99_5,
                    mean=stats.mean,
                    std=stats.std,
                )
            )
        else:
            result.append(ChannelNormalization(name, scheme, use_mask and scheme in MASKABLE_SCHEMES))
    return tuple(result)


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float], preset: PlannerPreset) -> list[float]:
    """A patch of ``edge ** dims`` voxels shaped like the spacing's inverse aspect ratio, capped at the median shape."""
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    dims = len(spacing)
    edge = preset.initial_patch_edge_3d if dims == 3 else preset.initial_patch_edge_2d
    patch = [round(v) for v in inverse * (edge**dims / np.prod(inverse)) ** (1 / dims)]
    return [min(p, m) for p, m in zip(patch, median_shape)]


@dataclass(frozen=True)
class _Candidate:
    topology: Topology
    network: AnyNetworkPlan
    samples_that_fit: float  # how many samples of this patch fit the budget in one step


def network_plan(topology: Topology, preset: PlannerPreset, dims: int) -> AnyNetworkPlan:
    """The preset's architecture for ``topology``: features double per stage from the base, capped."""
    cap = preset.max_features_3d if dims == 3 else preset.max_features_2d
    features = features_per_stage(topology.n_stages, preset.base_features, cap)
    return network_plan_for(preset.architecture, topology, features, preset)


def samples_that_fit(
    network: NetworkPlan, patch_size: tuple[int, ...], preset: PlannerPreset, in_channels: int, num_classes: int
) -> float:
    """How many patches one training step of ``network`` can hold under the preset's budget."""
    dims = len(patch_size)
    budget = preset.budget
    if isinstance(budget, FixedPatch):
        return float(budget.batch_size_3d if dims == 3 else budget.batch_size_2d)
    footprint = estimate_footprint(network, patch_size, in_channels, num_classes)
    if isinstance(budget, GpuMemoryBudget):
        reference = budget.reference_value_3d if dims == 3 else budget.reference_value_2d
        reference_batch = budget.reference_batch_size_3d if dims == 3 else budget.reference_batch_size_2d
        scaled = reference * budget.gpu_memory_gb / budget.reference_gpu_memory_gb
        return scaled / footprint.feature_map_voxels * reference_batch
    if isinstance(budget, StepTimeBudget):
        seconds_per_sample = footprint.flops * budget.backward_factor / (budget.effective_gflops * 1e9)
        return budget.step_seconds / seconds_per_sample
    raise TypeError(f"unknown budget {budget!r}")


def fit_patch_to_budget(
    spacing: Sequence[float], median_shape: Sequence[float], preset: PlannerPreset, in_channels: int, num_classes: int
) -> _Candidate:
    """Start from the initial patch; shrink the axis largest relative to the median shape until
    ``min_batch_size`` samples of the preset's architecture fit the budget. Shrinking steps by the axis'
    divisibility so that no valid patch size is skipped. A fixed-patch preset takes its patch as it is."""
    dims = len(spacing)
    edge, max_pool = preset.feature_map_min_edge, preset.max_pool_per_axis

    def candidate(patch: Sequence[float]) -> _Candidate:
        topology = pool_and_kernel_layout(spacing, patch, edge, max_pool)
        network = network_plan(topology, preset, dims)
        fit = samples_that_fit(network, topology.patch_size, preset, in_channels, num_classes)
        return _Candidate(topology, network, fit)

    if isinstance(preset.budget, FixedPatch):
        patch_edge = preset.budget.patch_edge_3d if dims == 3 else preset.budget.patch_edge_2d
        return candidate([min(float(patch_edge), m) for m in median_shape])
    current = candidate(initial_patch_size(spacing, median_shape, preset))
    while current.samples_that_fit < preset.min_batch_size:
        topology = current.topology
        patch = list(topology.patch_size)
        ratios = [p / m for p, m in zip(patch, median_shape)]
        axis = int(np.argsort(ratios)[-1])
        trial = list(patch)
        trial[axis] -= topology.divisible_by[axis]
        divisible_by = pool_and_kernel_layout(spacing, trial, edge, max_pool).divisible_by
        patch[axis] -= divisible_by[axis]
        if patch[axis] < 1:
            raise ValueError(f"cannot fit even the smallest patch into the budget of preset {preset.name!r}")
        current = candidate(patch)
    return current


def batch_size_for(candidate: _Candidate, preset: PlannerPreset, dataset_voxels: float) -> int:
    """As many samples as fit, at most the dataset fraction, at least ``min_batch_size`` (a fixed-patch preset:
    its batch)."""
    fits = round(candidate.samples_that_fit)
    if isinstance(preset.budget, FixedPatch):
        return fits
    coverage_cap = round(
        dataset_voxels * preset.max_batch_fraction_of_dataset / np.prod(candidate.topology.patch_size, dtype=np.float64)
    )
    return int(max(min(fits, coverage_cap), preset.min_batch_size))


def plan_configuration(
    name: str,
    spacing: Sequence[float] | np.ndarray,
    median_shape: Sequence[float] | np.ndarray,
    dataset_voxels: float,
    preset: PlannerPreset,
    normalization: tuple[ChannelNormalization, ...],
    num_classes: int,
    *,
    batch_dice: bool,
) -> ConfigurationPlan:
    """Patch, batch and network for one configuration at ``spacing`` (planning order)."""
    dims = len(spacing)
    try:
        candidate = fit_patch_to_budget(
            [float(s) for s in spacing], [float(s) for s in median_shape], preset, len(normalization), num_classes
        )
    except ValueError as exc:  # e.g. images too small for the architecture's stages, or a budget nothing fits
        raise PlanError(
            f"{name}: cannot plan a {preset.architecture} for a median image of "
            f"{' x '.join(str(round(float(s))) for s in median_shape)} voxels with preset {preset.name!r}: {exc}"
        ) from None
    batch_size = batch_size_for(candidate, preset, dataset_voxels)
    topology = candidate.topology
    return ConfigurationPlan(
        name=name,
        dimensions=dims,  # type: ignore[arg-type]
        data_identifier=f"{preset.name}_{name}",
        spacing=tuple(float(s) for s in spacing),
        median_shape=tuple(float(s) for s in median_shape),
        patch_size=topology.patch_size,
        batch_size=batch_size,
        batch_dice=batch_dice,
        network=candidate.network,
        normalization=normalization,
        resampling=ResamplingPlan(separate_axis_threshold=preset.anisotropy_threshold),
        budget_used=float(batch_size / candidate.samples_that_fit),
    )


def _lowres_configuration(
    fullres: ConfigurationPlan, preset: PlannerPreset, num_cases: int, normalization, num_classes: int
) -> ConfigurationPlan | None:
    """Coarsen the spacing (the coarse axes first) until the patch covers ``lowres_threshold`` of the median image."""
    median_shape = np.asarray(fullres.median_shape, dtype=np.float64)
    fullres_spacing = np.asarray(fullres.spacing, dtype=np.float64)
    median_voxels = float(np.prod(median_shape, dtype=np.float64))
    patch_voxels = float(np.prod(fullres.patch_size, dtype=np.float64))
    spacing = fullres_spacing.copy()
    lowres = None
    while patch_voxels / median_voxels < preset.lowres_threshold:
        coarsest = spacing.max()
        much_finer = (coarsest / spacing) > 2
        if np.any(much_finer):
            spacing[much_finer] *= preset.lowres_spacing_step
        else:
            spacing *= preset.lowres_spacing_step
        scaled_shape = fullres_spacing / spacing * median_shape
        median_voxels = float(np.prod(scaled_shape, dtype=np.float64))
        lowres = plan_configuration(
            "3d_lowres",
            spacing,
            tuple(round(float(s)) for s in scaled_shape),
            median_voxels * num_cases,
            preset,
            normalization,
            num_classes,
            batch_dice=False,
        )
        patch_voxels = float(np.prod(lowres.patch_size, dtype=np.float64))
    if lowres is None or np.prod(median_shape, dtype=np.float64) / median_voxels < preset.lowres_min_size_ratio:
        return None
    return lowres


def make_plan(
    fingerprint: Fingerprint,
    labels: Mapping[str, int | tuple[int, ...]],
    preset: PlannerPreset,
    *,
    nnseg_version: str,
    dataset_root: str = "",
) -> Plan:
    """Plan every configuration the preset asks for.

    Args:
        fingerprint: the dataset fingerprint.
        labels: the dataset's :class:`~nnseg.labels.LabelScheme` (``Dataset.labels``), or a plain
            name -> value mapping without regions; it decides the objective and the network outputs.
        preset: the planner's constants.
        nnseg_version: recorded in the plan.
        dataset_root: the raw dataset folder, recorded so that preprocessing finds it.
    """
    spacings = fingerprint.spacings
    shapes = fingerprint.shapes_after_crop
    num_cases = len(fingerprint.cases)
    fullres_spacing = target_spacing(spacings, shapes, preset.anisotropy_threshold)
    forward, backward = transpose_for(fullres_spacing)
    new_shapes = [resampled_shape(shape, spacing, fullres_spacing) for spacing, shape in zip(spacings, shapes)]
    median_shape = np.median(new_shapes, axis=0)[list(forward)]
    spacing_t = fullres_spacing[list(forward)]
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * num_cases)
    normalization = channel_normalization(fingerprint, preset.nonzero_mask_threshold)
    scheme = scheme_from(labels)
    num_classes = scheme.num_outputs

    configurations: dict[str, ConfigurationPlan] = {}
    wants = set(preset.configurations)
    if "2d" in wants:
        configurations["2d"] = plan_configuration(
            "2d", spacing_t[1:], median_shape[1:], dataset_voxels, preset, normalization, num_classes, batch_dice=True
        )
    if "3d_fullres" in wants and median_shape[0] != 1:
        fullres = plan_configuration(
            "3d_fullres", spacing_t, median_shape, dataset_voxels, preset, normalization, num_classes, batch_dice=False
        )
        lowres = None
        if "3d_lowres" in wants:
            lowres = _lowres_configuration(fullres, preset, num_cases, normalization, num_classes)
        if lowres is not None:
            configurations[LOWRES_CONFIGURATION] = replace(lowres, next_stage=CASCADE_CONFIGURATION)
            fullres = replace(fullres, batch_dice=True)
        configurations["3d_fullres"] = fullres
        if lowres is not None:  # nnU-Net's cascade: 3d_fullres's data, patch and network, plus the lowres input
            configurations[CASCADE_CONFIGURATION] = replace(
                fullres, name=CASCADE_CONFIGURATION, previous_stage=LOWRES_CONFIGURATION
            )
    return Plan(
        schema_version=PLAN_SCHEMA_VERSION,
        nnseg_version=nnseg_version,
        dataset_name=fingerprint.dataset_name,
        dataset_root=dataset_root,
        preset=preset.name,
        preset_values=preset,
        channel_names=fingerprint.channel_names,
        labels=dict(scheme.labels),
        num_training_cases=num_cases,
        transpose_forward=forward,
        transpose_backward=backward,
        original_median_spacing=tuple(float(s) for s in np.median(spacings, axis=0)[list(forward)]),
        original_median_shape=tuple(float(s) for s in np.median(shapes, axis=0)[list(forward)]),
        configurations=configurations,
        regions_class_order=scheme.regions_class_order,
        objective=scheme.objective,
    )
