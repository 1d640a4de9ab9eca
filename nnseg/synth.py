"""``nnseg synth``: realistic phantom datasets in the nnU-Net layout, deterministic from a seed.

Each case is a body (an irregular ellipsoid) holding an organ (a large rotated
ellipsoid, label 1) and a lesion (a small sphere inside the organ, label 2), with a
"spine" (a bright cylinder, unlabelled) as distractor. ``--regions`` writes a BraTS-like brain-tumour set
(nested regions, 4 MR channels) and ``--sparse FRACTION`` keeps the labels of only some slices (the rest is
the ``ignore`` label). With ``structures`` (``nnseg synth
--structure NAME:VOXELS[xCOUNT]``) the body holds the given structure classes instead:
``COUNT`` separate blobs per case of about ``VOXELS`` voxels each, so sizes can span orders
of magnitude (e.g. 1,000 / 100 / 30 voxels, several small lesions). Cases differ in shape,
voxel spacing, size, position and orientation (oblique, some in LPS-like axis order).

CT-like images are int16 Hounsfield units with air at -1000; MR-like images are float32
with a multiplicative bias field, noise, and zero outside the head/body field of view
(as after skull-stripping or defacing) so that cropping to the nonzero box matters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from nnseg.errors import NnsegError
from nnseg.io import Geometry, write_volume
from nnseg.progress import progress

Modality = Literal["CT", "MR"]

#: Mean intensity per tissue: (background, body, organ, lesion, spine), per modality and channel.
_TISSUE_MEANS: dict[str, list[tuple[float, float, float, float, float]]] = {
    "CT": [(-1000.0, 30.0, 75.0, 140.0, 450.0)],
    "MR": [(0.0, 300.0, 520.0, 850.0, 150.0), (0.0, 420.0, 260.0, 950.0, 120.0)],
}
_NOISE = {"CT": 18.0, "MR": 25.0}
_MR_CHANNEL_NAMES = ("T1", "T2", "FLAIR", "PD")
_BRATS_CHANNELS = ("T1", "T1ce", "T2", "FLAIR")
#: --regions: mean per tissue (background, brain, edema, necrosis, enhancing, CSF) of T1, T1ce, T2, FLAIR.
_BRATS_MEANS = (
    (0.0, 0.0, 0.0, 0.0),
    (500.0, 480.0, 400.0, 420.0),
    (430.0, 450.0, 750.0, 820.0),
    (300.0, 320.0, 900.0, 520.0),
    (480.0, 1100.0, 650.0, 600.0),
    (200.0, 200.0, 1000.0, 150.0),
)
#: Mean intensity of structure class i (cycled) per modality and channel; bodies are 30 HU / 300 / 420.
#: Contrast to the body is 2.5-9 noise standard deviations, some brighter, some darker.
_STRUCTURE_MEANS: dict[str, list[tuple[float, ...]]] = {
    "CT": [(75.0, 140.0, -25.0, 190.0, 110.0, -60.0)],
    "MR": [(520.0, 850.0, 170.0, 700.0, 430.0, 110.0), (260.0, 950.0, 640.0, 200.0, 800.0, 560.0)],
}


@dataclass(frozen=True)
class Structure:
    """A labelled structure class: ``count`` separate blobs of about ``voxels`` voxels each per case."""

    name: str
    voxels: float
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Structure:
        """``NAME:VOXELS`` or ``NAME:VOXELSxCOUNT``, e.g. ``lesion:30x4``."""
        name, sep, size = text.partition(":")
        voxels, _, count = size.lower().partition("x")
        try:
            structure = cls(name.strip(), float(voxels), int(count) if count else 1)
        except ValueError:
            structure = None
        if not sep or structure is None:
            raise NnsegError(
                f"--structure {text!r}: expected NAME:VOXELS or NAME:VOXELSxCOUNT, e.g. organ:1000 or lesion:30x4"
            )
        structure.validate()
        return structure

    def validate(self) -> None:
        if not self.name or self.name == "background" or not self.name.replace("_", "").isalnum():
            raise NnsegError(f"--structure: name {self.name!r} must be a word (letters, digits, _), not background")
        if not 1 <= self.voxels <= 1e7:
            raise NnsegError(f"--structure {self.name}: voxels must be 1..1e7, got {self.voxels:g}")
        if not 1 <= self.count <= 50:
            raise NnsegError(f"--structure {self.name}: count must be 1..50, got {self.count}")


@dataclass(frozen=True)
class SynthConfig:
    """What ``nnseg synth`` generates.

    Attributes:
        num_cases: training cases (imagesTr + labelsTr).
        num_test: extra cases written to imagesTs (labels to labelsTs, for evaluation).
        shape: nominal array shape ``(k, j, i)``; each case varies by about +-15 %.
        spacing: nominal voxel size in mm ``(k, j, i)``; each case varies by about +-10 %.
        modality: "CT" (HU, int16) or "MR" (float32, bias field).
        channels: number of channels (MR only for > 1: T1, T2, ...).
        anisotropic: thick slices along k: spacing k of 3.5-5 mm (in-plane 0.7-0.9 mm),
            with the slice count reduced accordingly.
        oblique: rotate cases by up to 12 degrees and flip some into LPS-like axis order.
        seed: everything is a function of this seed.
        file_ending: ".nii.gz", ".nii", ".mha" or ".nrrd".
        structures: the labelled structure classes (labels 1, 2, ... in this order); empty for
            the default organ + lesion.
        regions: a BraTS-like brain-tumour set instead (``nnseg synth --regions``): 4 MR channels
            (T1, T1ce, T2, FLAIR), file labels 1 edema, 2 non-enhancing core, 3 enhancing, declared as
            the nested regions whole_tumor (1, 2, 3) > tumor_core (2, 3) > enhancing (3),
            regions_class_order [1, 2, 3].
        sparse: keep the labels of only this fraction of the slices along the first array axis (k,
            the through-plane axis), chosen at random per case (at least one); the others become the
            ``ignore`` label (the highest value). Test cases (labelsTs) stay dense. None: dense.
    """

    num_cases: int = 8
    num_test: int = 0
    shape: tuple[int, int, int] = (40, 48, 48)
    spacing: tuple[float, float, float] = (1.5, 1.2, 1.2)
    modality: Modality = "CT"
    channels: int = 1
    anisotropic: bool = False
    oblique: bool = True
    seed: int = 0
    file_ending: str = ".nii.gz"
    structures: tuple[Structure, ...] = ()
    regions: bool = False
    sparse: float | None = None

    def validate(self) -> None:
        if self.num_cases < 1:
            raise NnsegError(f"--cases must be >= 1, got {self.num_cases}")
        if self.num_test < 0:
            raise NnsegError(f"--test-cases must be >= 0, got {self.num_test}")
        if self.modality not in _TISSUE_MEANS:
            raise NnsegError(f"--modality must be CT or MR, got {self.modality!r}")
        if self.modality == "CT" and self.channels != 1:
            raise NnsegError("CT phantoms have one channel; use --modality MR for several channels")
        if not 1 <= self.channels <= len(_MR_CHANNEL_NAMES):
            raise NnsegError(f"--channels must be 1..{len(_MR_CHANNEL_NAMES)}, got {self.channels}")
        if any(s < 16 for s in self.shape):
            raise NnsegError(f"--shape must be at least 16 voxels per axis, got {self.shape}")
        if any(s <= 0 for s in self.spacing):
            raise NnsegError(f"--spacing must be positive, got {self.spacing}")
        if self.file_ending not in (".nii.gz", ".nii", ".mha", ".nrrd"):
            raise NnsegError(f"--file-ending must be .nii.gz, .nii, .mha or .nrrd, got {self.file_ending!r}")
        for structure in self.structures:
            structure.validate()
        names = [s.name for s in self.structures]
        if len(set(names)) != len(names):
            raise NnsegError(f"--structure: names must differ, got {names}")
        if not 1 <= len(names) <= 254 and names:
            raise NnsegError("--structure: at most 254 structure classes")
        if self.regions and (self.modality != "MR" or self.channels != len(_BRATS_CHANNELS) or self.structures):
            raise NnsegError(
                "--regions writes 4 MR channels with its own structures; drop --modality, --channels and --structure"
            )
        if self.sparse is not None and not 0.0 < self.sparse <= 1.0:
            raise NnsegError(f"--sparse must be a fraction in (0, 1], got {self.sparse}")

    @property
    def channel_names(self) -> tuple[str, ...]:
        if self.regions:
            return _BRATS_CHANNELS
        return ("CT",) if self.modality == "CT" else _MR_CHANNEL_NAMES[: self.channels]

    @property
    def labels(self) -> dict[str, int | list[int]]:
        """dataset.json's labels (regions as lists; ``ignore`` last when sparse)."""
        labels: dict[str, int | list[int]]
        if self.regions:
            labels = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": [3]}
        else:
            names = [s.name for s in self.structures] or ["organ", "lesion"]
            labels = {"background": 0, **{name: value for value, name in enumerate(names, start=1)}}
        if self.sparse is not None:
            labels["ignore"] = self.ignore_value
        return labels

    @property
    def ignore_value(self) -> int:
        """The value of unannotated voxels in sparse labels: one above the highest label."""
        return 4 if self.regions else (len(self.structures) or 2) + 1


@dataclass(frozen=True)
class PhantomCase:
    """One generated case: channels ``(c, k, j, i)``, labels ``(k, j, i)``, geometry."""

    images: np.ndarray
    labels: np.ndarray
    geometry: Geometry


def make_case(config: SynthConfig, rng: np.random.Generator) -> PhantomCase:
    """Draw one phantom case (dense labels)."""
    if config.regions:
        return _make_brats_case(config, rng)
    if config.structures:
        return _make_structures_case(config, rng)
    spacing, shape = _case_grid(config, rng)
    coords = _physical_coords(shape, spacing)
    extent = np.array(shape) * np.array(spacing)

    body = _irregular_ellipsoid(coords, np.zeros(3), extent * rng.uniform(0.36, 0.44, 3), rng, roughness=0.08)
    organ_radii = extent * rng.uniform(0.14, 0.22, 3)
    organ_center = _random_point_inside(extent * 0.12, rng)
    organ = _irregular_ellipsoid(coords, organ_center, organ_radii, rng, roughness=0.05, rotate=True) & body
    lesion_radius = max(float(organ_radii.min() * rng.uniform(0.4, 0.6)), 3.0 * float(min(spacing)))
    lesion_center = organ_center + _random_point_inside(organ_radii * 0.2, rng)
    lesion = (np.linalg.norm(coords - lesion_center[:, None, None, None], axis=0) <= lesion_radius) & organ
    spine_center = np.array([0.0, -extent[1] * 0.25, rng.uniform(-3, 3)])
    spine = (np.hypot(coords[1] - spine_center[1], coords[2] - spine_center[2]) <= extent[2] * 0.05) & body & ~organ

    labels = np.zeros(shape, dtype=np.uint8)
    labels[organ] = 1
    labels[lesion] = 2
    tissue = np.zeros(shape, dtype=np.uint8)  # 0 background, 1 body, 2 organ, 3 lesion, 4 spine
    tissue[body] = 1
    tissue[organ] = 2
    tissue[lesion] = 3
    tissue[spine] = 4

    means = [_channel_means(_TISSUE_MEANS[config.modality], c) for c in range(config.channels)]
    return _finish_case(config, means, tissue, body, coords, extent, labels, spacing, shape, rng)


def _make_brats_case(config: SynthConfig, rng: np.random.Generator) -> PhantomCase:
    """A brain (with ventricles as distractor) holding a tumour: edema around a core whose rim enhances."""
    spacing, shape = _case_grid(config, rng)
    coords = _physical_coords(shape, spacing)
    extent = np.array(shape) * np.array(spacing)
    brain = _irregular_ellipsoid(coords, np.zeros(3), extent * rng.uniform(0.36, 0.42, 3), rng, roughness=0.08)
    ventricles = _irregular_ellipsoid(coords, np.zeros(3), extent * [0.08, 0.05, 0.12], rng, roughness=0.1) & brain
    edema_radii = np.maximum(extent * rng.uniform(0.1, 0.2, 3), 5.0 * spacing)  # nested parts stay visible
    center = _random_point_inside(extent * 0.15, rng)
    edema = _irregular_ellipsoid(coords, center, edema_radii, rng, roughness=0.15, rotate=True) & brain
    core_center = center + _random_point_inside(edema_radii * 0.15, rng)
    core_radii = np.maximum(edema_radii * rng.uniform(0.45, 0.65), 3.0 * spacing)
    core = _irregular_ellipsoid(coords, core_center, core_radii, rng, roughness=0.1) & edema
    inner = ndimage.binary_erosion(core)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[edema] = 1
    labels[core] = 3  # the enhancing rim ...
    labels[inner] = 2  # ... around the non-enhancing (necrotic) centre
    tissue = np.where(brain, 1, 0).astype(np.uint8)  # 0 background, 1 brain, 2 edema, 3 necrosis, 4 enhancing, 5 CSF
    tissue[ventricles & ~edema] = 5
    tissue[labels > 0] = labels[labels > 0] + 1
    means = [tuple(row[c] for row in _BRATS_MEANS) for c in range(len(_BRATS_CHANNELS))]
    return _finish_case(config, means, tissue, brain, coords, extent, labels, spacing, shape, rng)


def sparsify(labels: np.ndarray, fraction: float, ignore: int, rng: np.random.Generator) -> np.ndarray:
    """Keep the labels of ``fraction`` of the slices along axis 0 (at least one, chosen at random); the rest
    becomes ``ignore``, as a sparse (partial) annotation would leave them."""
    keep = max(1, round(fraction * labels.shape[0]))
    annotated = np.zeros(labels.shape[0], dtype=bool)
    annotated[rng.choice(labels.shape[0], keep, replace=False)] = True
    return np.where(annotated[:, None, None], labels, np.asarray(ignore, dtype=labels.dtype))


def _make_structures_case(config: SynthConfig, rng: np.random.Generator) -> PhantomCase:
    """A body holding ``count`` blobs of each structure class, none touching another."""
    spacing, shape = _case_grid(config, rng)
    coords = _physical_coords(shape, spacing)
    extent = np.array(shape) * np.array(spacing)
    body_radii = extent * rng.uniform(0.36, 0.44, 3)
    body = _irregular_ellipsoid(coords, np.zeros(3), body_radii, rng, roughness=0.08)
    spine = (np.hypot(coords[1] + extent[1] * 0.25, coords[2] - rng.uniform(-3, 3)) <= extent[2] * 0.05) & body
    labels = np.zeros(shape, dtype=np.uint8)
    tissue = np.where(body, 1, 0).astype(np.uint8)  # 0 background, 1 body, 2 spine, 3 + i structure class i
    tissue[spine] = 2
    occupied = spine.copy()
    voxel_volume = float(np.prod(spacing))
    # largest first, so small blobs fill the room the large ones leave
    for index in sorted(range(len(config.structures)), key=lambda i: -config.structures[i].voxels):
        structure = config.structures[index]
        for _ in range(structure.count):
            volume = structure.voxels * voxel_volume * rng.uniform(0.75, 1.25)
            radii = rng.uniform(0.75, 1.33, 3)
            radii *= (volume / (4 / 3 * np.pi * np.prod(radii))) ** (1 / 3)
            blob = _place_blob(coords, body_radii, radii, occupied, spacing, rng, large=structure.voxels >= 500)
            labels[blob] = index + 1
            tissue[blob] = 3 + index
            occupied |= ndimage.binary_dilation(blob, iterations=2)
    means = []
    for channel in range(config.channels):
        background, body_mean, _, _, spine_mean = _channel_means(_TISSUE_MEANS[config.modality], channel)
        palette = _channel_means(_STRUCTURE_MEANS[config.modality], channel)
        classes = [palette[i % len(palette)] for i in range(len(config.structures))]
        means.append((background, body_mean, spine_mean, *classes))
    return _finish_case(config, means, tissue, body, coords, extent, labels, spacing, shape, rng)


def _place_blob(
    coords: np.ndarray,
    body_radii: np.ndarray,
    radii: np.ndarray,
    occupied: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    *,
    large: bool,
) -> np.ndarray:
    """A blob of the given radii at a random free place inside the body (the least crowded of 40 tries)."""
    best, best_overlap = np.zeros(coords.shape[1:], dtype=bool), np.inf
    room = np.maximum(body_radii * 0.8 - radii.max(), spacing)
    for _ in range(40):
        half = (np.array(coords.shape[1:]) - 1) / 2
        index = np.clip(np.round(_random_point_inside(room / np.sqrt(3), rng) / spacing + half), 0, 2 * half)
        center = (index - half) * spacing  # a voxel centre, so that even a blob of a few voxels is never empty
        if large:
            blob = _irregular_ellipsoid(coords, center, radii, rng, roughness=0.05, rotate=True)
        else:
            offset = (coords - center.astype(np.float32)[:, None, None, None]) / radii[:, None, None, None]
            blob = (offset**2).sum(0) <= 1.0
        blob[tuple(index.astype(int))] = True
        overlap = int((blob & occupied).sum())
        if overlap < best_overlap:
            best, best_overlap = blob, overlap
        if overlap == 0:
            break
    return best & ~occupied if best_overlap else best


def _channel_means(table: Sequence[tuple[float, ...]], channel: int) -> tuple[float, ...]:
    """Channel ``channel``'s row of a per-channel table; channels past the table repeat it at another scale."""
    row = table[channel % len(table)]
    scale = 1.0 + 0.2 * (channel // len(table))
    return tuple(value * scale for value in row)


def _finish_case(
    config: SynthConfig,
    means: list[tuple[float, ...]],
    tissue: np.ndarray,
    body: np.ndarray,
    coords: np.ndarray,
    extent: np.ndarray,
    labels: np.ndarray,
    spacing: np.ndarray,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
) -> PhantomCase:
    channels = [_render_channel(config.modality, row, tissue, body, rng) for row in means]
    if config.modality == "MR":
        fov = _irregular_ellipsoid(coords, np.zeros(3), extent * rng.uniform(0.43, 0.47, 3), rng, roughness=0.0)
        channels = [np.where(fov, c, 0.0).astype(np.float32) for c in channels]
    else:
        channels = [np.clip(np.round(c), -1024, 3071).astype(np.int16) for c in channels]
    return PhantomCase(np.stack(channels), labels, _case_geometry(config, spacing, shape, rng))


def _case_grid(config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    spacing = np.array(config.spacing, dtype=np.float64) * rng.uniform(0.9, 1.1, 3)
    shape = np.array(config.shape, dtype=np.float64) * rng.uniform(0.85, 1.15, 3)
    if config.anisotropic:
        in_plane = rng.uniform(0.7, 0.9)
        thick = rng.uniform(3.5, 5.0)
        # keep the physical extent along k, with fewer and thicker slices
        shape[0] = max(12.0, shape[0] * config.spacing[0] / thick)
        spacing = np.array([thick, in_plane, in_plane])
    return np.round(spacing, 4), tuple(int(round(s)) for s in shape)  # type: ignore[return-value]


def _physical_coords(shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


def _random_point_inside(half_extent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, 3) * half_extent


def _random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _irregular_ellipsoid(
    coords: np.ndarray,
    center: np.ndarray,
    radii: np.ndarray,
    rng: np.random.Generator,
    *,
    roughness: float,
    rotate: bool = False,
) -> np.ndarray:
    offset = coords - center.astype(np.float32)[:, None, None, None]
    if rotate:
        rotation = _random_rotation(rng, 40.0).astype(np.float32)
        offset = np.einsum("ab,b...->a...", rotation, offset)
    radius = np.sqrt(sum((offset[a] / radii[a]) ** 2 for a in range(3)))
    if roughness > 0:
        # low-frequency bumps on the surface: a smooth function of direction
        direction = offset / np.maximum(np.linalg.norm(offset, axis=0), 1e-6)
        weights = rng.normal(size=(3, 2))
        bumps = sum(weights[a, 0] * np.sin(3 * direction[a] + weights[a, 1]) for a in range(3))
        radius = radius * (1 + roughness * bumps / 3)
    return radius <= 1.0


def _render_channel(
    modality: str, means: tuple[float, ...], tissue: np.ndarray, body: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    image = np.asarray(means, dtype=np.float32)[tissue]
    texture = ndimage.gaussian_filter(rng.normal(size=tissue.shape).astype(np.float32), 1.5)
    image += np.where(body, texture * _NOISE[modality] * 2.0, 0.0).astype(np.float32)
    image = ndimage.gaussian_filter(image, 0.6)  # partial-volume blur at edges
    if modality == "MR":
        image *= _bias_field(tissue.shape, rng)
        image = np.abs(image + rng.normal(0, _NOISE[modality], tissue.shape).astype(np.float32))  # Rician-like
    else:
        image += rng.normal(0, _NOISE[modality], tissue.shape).astype(np.float32)
    return image


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    coefficients = rng.normal(0, 0.15, size=(3, 2))
    log_field = sum(coefficients[a, 0] * grids[a] + coefficients[a, 1] * grids[a] ** 2 for a in range(3))
    return np.exp(log_field).astype(np.float32)


def _case_geometry(
    config: SynthConfig, spacing: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator
) -> Geometry:
    spacing_ijk = spacing[::-1]
    direction = np.eye(3)
    if config.oblique:
        direction = _random_rotation(rng, 12.0)
        if rng.random() < 0.5:
            direction = np.diag([-1.0, -1.0, 1.0]) @ direction  # LPS-like axis order
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing_ijk)
    affine[:3, 3] = rng.uniform(-120, 120, 3)
    return Geometry(affine=np.round(affine, 5), shape=shape, qform_code=1, sform_code=1)


def generate_dataset(out: str | os.PathLike, config: SynthConfig, *, show_progress: bool = True) -> Path:
    """Write a phantom dataset in the nnU-Net v2 layout.

    Args:
        out: destination folder (created; must be empty or absent).
        config: what to generate.
        show_progress: draw a progress bar.

    Returns:
        The dataset folder, holding dataset.json, imagesTr/, labelsTr/ and, with test cases,
        imagesTs/ and labelsTs/.

    Example:
        >>> generate_dataset("phantoms", SynthConfig(num_cases=4, seed=1))  # doctest: +SKIP
    """
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise NnsegError(f"{out}: folder exists and is not empty; choose a new folder for the phantoms")
    rng = np.random.default_rng(config.seed)
    seeds = rng.integers(0, 2**31, size=config.num_cases + config.num_test)
    ending = config.file_ending
    for index in progress(range(len(seeds)), total=len(seeds), desc="synth", unit="case", enabled=show_progress):
        is_test = index >= config.num_cases
        case_id = f"case_{index:03d}"
        case = make_case(config, np.random.default_rng(seeds[index]))
        image_dir, label_dir = ("imagesTs", "labelsTs") if is_test else ("imagesTr", "labelsTr")
        for channel, image in enumerate(case.images):
            write_volume(out / image_dir / f"{case_id}_{channel:04d}{ending}", image, case.geometry)
        labels = case.labels
        if config.sparse is not None and not is_test:
            labels = sparsify(labels, config.sparse, config.ignore_value, np.random.default_rng(seeds[index] + 1))
        write_volume(out / label_dir / f"{case_id}{ending}", labels, case.geometry, is_label=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    dataset_json = {
        "name": f"Phantoms{config.modality}",
        "description": "nnseg synthetic phantoms",
        "channel_names": {str(i): name for i, name in enumerate(config.channel_names)},
        "labels": config.labels,
        **({"regions_class_order": [1, 2, 3]} if config.regions else {}),
        "numTraining": config.num_cases,
        "file_ending": ending,
        "nnseg_synth": json.loads(json.dumps(asdict(config))),
    }
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
    return out
