"""Planner presets: the planner's policy constants, loaded from ``plans/*.json``.

A preset is data, not code: ``plans/default.json`` holds nnU-Net v2's constants,
``plans/cpu.json`` a step-time budget for training on a CPU. ``--preset NAME`` picks a
file from ``plans/``; ``--preset PATH`` reads any file with the same schema.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from nnseg.errors import NnsegError
from nnseg.networks.plans import NETWORK_PLANS, NNUNET_BLOCKS
from nnseg.recipes import RECIPE_CHOICES
from nnseg.schema import SchemaError, load_dataclass, read_json


@dataclass(frozen=True)
class GpuMemoryBudget:
    """Fit the network's activation footprint (in feature-map voxels) to a GPU's memory, as nnU-Net does.

    Attributes:
        gpu_memory_gb: the memory to plan for.
        reference_gpu_memory_gb: the memory the reference values correspond to.
        reference_value_3d / reference_value_2d: footprint that fits ``reference_gpu_memory_gb``
            at ``reference_batch_size_3d`` / ``_2d``.
    """

    type: Literal["gpu_memory"]
    gpu_memory_gb: float = 8.0
    reference_gpu_memory_gb: float = 8.0
    reference_value_3d: float = 560_000_000
    reference_value_2d: float = 85_000_000
    reference_batch_size_3d: int = 2
    reference_batch_size_2d: int = 12


@dataclass(frozen=True)
class StepTimeBudget:
    """Fit one training step (forward + backward of a batch) into a time budget on a CPU.

    Attributes:
        step_seconds: target wall time of one training iteration.
        effective_gflops: measured throughput of a training step (forward + backward FLOPs / second),
            see ``benchmarks/cpu_step_time.py``.
        backward_factor: training FLOPs / forward FLOPs (forward + backward ~ 3x forward).
        measured_on: where the throughput was measured.
    """

    type: Literal["step_time"]
    step_seconds: float
    effective_gflops: float
    backward_factor: float = 3.0
    measured_on: str = ""


@dataclass(frozen=True)
class FixedPatch:
    """A fixed recipe instead of a budget (No New-Net): a cube of ``patch_edge`` voxels per axis, capped at the
    median image (then padded to the network's divisibility), and a fixed batch.

    Attributes:
        patch_edge_3d / patch_edge_2d: patch edge in voxels.
        batch_size_3d / batch_size_2d: patches per step.
    """

    type: Literal["fixed"]
    patch_edge_3d: int = 128
    patch_edge_2d: int = 256
    batch_size_3d: int = 2
    batch_size_2d: int = 12

    def __post_init__(self) -> None:
        for name in ("patch_edge_3d", "patch_edge_2d", "batch_size_3d", "batch_size_2d"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PlannerPreset:
    """Every constant the planner uses.

    Attributes:
        name: preset name, recorded in plans.json.
        description: what the preset is for.
        budget: how big a patch/batch may get (GPU memory, CPU step time, or a fixed patch and batch).
        architecture: the network to plan (a name from :func:`nnseg.networks.available`); the budget is fitted
            to that architecture's own footprint (memory) or FLOPs (step time).
        base_features: features of the first stage; doubles per stage.
        max_features_3d / max_features_2d: cap on features per stage.
        feature_map_min_edge: smallest bottleneck edge (voxels).
        max_pool_per_axis: cap on downsamplings per axis (None: no cap, as nnU-Net v2).
        conv_per_stage_encoder / conv_per_stage_decoder: convolutions per stage of the plain U-Net (which builds
            2), and per node of UNet++ / per stage of FCN (encoder); residual encoders have their own rule.
        encoder_blocks_per_stage: residual blocks per encoder stage of residual encoders (resenc_unet,
            deeplabv3plus); the last value repeats for deeper networks.
        min_batch_size: the batch never goes below this.
        max_batch_fraction_of_dataset: one batch covers at most this fraction of the dataset's voxels.
        anisotropy_threshold: spacing ratio that makes an axis "anisotropic".
        initial_patch_edge_3d / initial_patch_edge_2d: the patch starts as this many voxels per edge
            (reshaped to the spacing's aspect ratio) before it is shrunk to the budget.
        lowres_threshold: plan 3d_lowres when the fullres patch covers less than this fraction of the median image.
        lowres_spacing_step: factor by which the lowres spacing grows per search step.
        lowres_min_size_ratio: drop 3d_lowres unless it shrinks the median image at least this much.
        nonzero_mask_threshold: normalize within the nonzero mask when cropping leaves less than this
            fraction of the median image.
        configurations: which configurations to plan ("2d", "3d_fullres", "3d_lowres").
        training_recipe: the recipe ``nnseg train --recipe auto`` uses with this plan ("auto": chosen by the
            run's length; see :mod:`nnseg.recipes`).
    """

    name: str
    description: str
    budget: GpuMemoryBudget | StepTimeBudget | FixedPatch
    architecture: str = "unet"
    base_features: int = NNUNET_BLOCKS.base_features
    max_features_3d: int = 320
    max_features_2d: int = 512
    feature_map_min_edge: int = 4
    max_pool_per_axis: int | None = None
    conv_per_stage_encoder: int = NNUNET_BLOCKS.conv_per_stage_encoder
    conv_per_stage_decoder: int = NNUNET_BLOCKS.conv_per_stage_decoder
    encoder_blocks_per_stage: tuple[int, ...] = NNUNET_BLOCKS.encoder_blocks_per_stage
    min_batch_size: int = 2
    max_batch_fraction_of_dataset: float = 0.05
    anisotropy_threshold: float = 3.0
    initial_patch_edge_3d: int = 256
    initial_patch_edge_2d: int = 2048
    lowres_threshold: float = 0.25
    lowres_spacing_step: float = 1.03
    lowres_min_size_ratio: float = 2.0
    nonzero_mask_threshold: float = 0.75
    configurations: tuple[str, ...] = ("2d", "3d_fullres", "3d_lowres")
    training_recipe: str = "auto"

    def __post_init__(self) -> None:
        positive = {
            "base_features": self.base_features,
            "max_features_3d": self.max_features_3d,
            "max_features_2d": self.max_features_2d,
            "feature_map_min_edge": self.feature_map_min_edge,
            "conv_per_stage_encoder": self.conv_per_stage_encoder,
            "min_batch_size": self.min_batch_size,
            "initial_patch_edge_3d": self.initial_patch_edge_3d,
            "initial_patch_edge_2d": self.initial_patch_edge_2d,
        }
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if not 0 < self.max_batch_fraction_of_dataset <= 1:
            raise ValueError(
                f"max_batch_fraction_of_dataset must be in (0, 1], got {self.max_batch_fraction_of_dataset}"
            )
        if self.lowres_spacing_step <= 1:
            raise ValueError(f"lowres_spacing_step must be > 1, got {self.lowres_spacing_step}")
        unknown = set(self.configurations) - {"2d", "3d_fullres", "3d_lowres"}
        if unknown or not self.configurations:
            raise ValueError(f"configurations must be among 2d, 3d_fullres, 3d_lowres; got {list(self.configurations)}")
        if "3d_lowres" in self.configurations and "3d_fullres" not in self.configurations:
            raise ValueError("3d_lowres is derived from 3d_fullres: list both")
        if not self.encoder_blocks_per_stage or min(self.encoder_blocks_per_stage) < 1:
            raise ValueError(
                f"encoder_blocks_per_stage must hold values >= 1, got {list(self.encoder_blocks_per_stage)}"
            )

        if self.architecture not in NETWORK_PLANS:
            raise ValueError(
                f"architecture must be one of {', '.join(sorted(NETWORK_PLANS))}, got {self.architecture!r}"
            )

        if self.training_recipe not in RECIPE_CHOICES:
            choices = ", ".join(RECIPE_CHOICES)
            raise ValueError(f"training_recipe must be one of {choices}, got {self.training_recipe!r}")


def presets_dir() -> Path:
    """The ``plans/`` folder shipped with nnseg (beside the package, or inside it when installed)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "plans", here / "plans"):
        if candidate.is_dir():
            return candidate
    raise NnsegError(f"cannot find the planner presets folder plans/ (looked beside {here})")


def available_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.json"))


def preset_summaries() -> dict[str, str]:
    """Shipped preset name -> the first sentence of its description (for ``--help``)."""
    summaries: dict[str, str] = {}
    try:
        names = available_presets()
    except NnsegError:  # no plans/ folder: the command that needs a preset says so
        return summaries
    for name in names:
        try:
            description = read_json(presets_dir() / f"{name}.json", "planner preset").get("description", "")
        except (NnsegError, AttributeError):
            description = "(unreadable)"
        summaries[name] = description.split(". ")[0].rstrip(".")
    return summaries


def load_preset(
    name_or_path: str | os.PathLike, *, gpu_memory_gb: float | None = None, architecture: str | None = None
) -> PlannerPreset:
    """Load a preset by name (``plans/<name>.json``) or path; optionally override the GPU memory and architecture.

    Raises:
        NnsegError: unknown name, unreadable file, or a value that breaks the schema.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or os.sep in text):
        path = presets_dir() / f"{text}.json"
        if not path.is_file():
            raise NnsegError(
                f"unknown preset {text!r}; available: {', '.join(available_presets())} "
                "(or give a path to a preset .json)"
            )
    try:
        preset = load_dataclass(PlannerPreset, read_json(path, "planner preset"))
    except SchemaError as exc:
        raise NnsegError(f"{path}: invalid planner preset: {exc}") from None
    if gpu_memory_gb is not None:
        if not isinstance(preset.budget, GpuMemoryBudget):
            raise NnsegError(
                f"--gpu-memory-gb applies to GPU-memory presets; preset {preset.name!r} has a {preset.budget.type} "
                "budget"
            )
        if gpu_memory_gb <= 0:
            raise NnsegError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
        preset = replace(preset, budget=replace(preset.budget, gpu_memory_gb=float(gpu_memory_gb)))
    if architecture is not None:
        if architecture not in NETWORK_PLANS:
            raise NnsegError(
                f"--architecture {architecture!r} is not known; available: {', '.join(sorted(NETWORK_PLANS))}"
            )
        preset = replace(preset, architecture=architecture)
    return preset
