"""Quick-look PNGs: three orthogonal slices of an image with its label map drawn over it.

The slices cross at the centre of mass of the largest foreground structure (its largest
26-connected component; the nearest voxel of it when the centre falls outside, e.g. for a
ring), or at the volume centre when the label map is empty. Panels show array axes as
stored, larger indices up and right, scaled to millimetres: axial = a slice along axis 0
(rows j, columns i), coronal = axis 1 (rows k, columns i), sagittal = axis 2 (rows k, columns j).
:func:`overlay_case` first turns the arrays to the closest RAS orientation, so there axis 0
is inferior→superior, axis 1 posterior→anterior and axis 2 left→right (patient's right on the right).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError
from nnseg.io import Geometry, read_volume
from nnseg.postprocessing import largest_component_mask

#: Label colours (RGB, 0..1), chosen by label value so a label keeps its colour across cases.
_PALETTE = (
    (0.90, 0.10, 0.10),
    (0.10, 0.75, 0.20),
    (0.15, 0.45, 1.00),
    (1.00, 0.80, 0.00),
    (0.85, 0.20, 0.90),
    (0.00, 0.85, 0.85),
    (1.00, 0.50, 0.00),
    (0.55, 0.90, 0.30),
    (0.95, 0.45, 0.65),
    (0.55, 0.35, 0.95),
    (0.60, 0.40, 0.20),
    (0.50, 0.75, 1.00),
    (1.00, 1.00, 0.55),
    (0.20, 0.55, 0.45),
    (0.80, 0.80, 0.80),
)
_FILL_ALPHA = 0.35
#: Voxels sampled (at most) for the intensity window and for snapping the crossing point.
_SAMPLE = 1 << 21
_FIG_WIDTH = 12.0  # inches
_WSPACE = 0.04  # gap between panels, as a fraction of their mean width


def label_colour(value: int) -> tuple[float, float, float]:
    """Colour of a nonzero label value."""
    return _PALETTE[(int(value) - 1) % len(_PALETTE)]


def _check_inputs(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (k, j, i), got shape {image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"label map shape {labels.shape} differs from image shape {image.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive finite values in mm, got {spacing}")
    return spacing


def _stride(shape: tuple[int, ...]) -> int:
    """Step per axis that leaves at most about ``_SAMPLE`` voxels."""
    return max(1, math.ceil((math.prod(shape) / _SAMPLE) ** (1 / len(shape))))


def intensity_window(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Robust display range: the ``low``-th and ``high``-th percentiles of the finite voxels (subsampled)."""
    step = _stride(image.shape)
    sample = np.asarray(image[::step, ::step, ::step], dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(sample, (low, high)))
    if vmax <= vmin:
        vmin, vmax = float(sample.min()), float(sample.max())
    return (vmin, vmax) if vmax > vmin else (vmin - 0.5, vmin + 0.5)


def _centre_of_mass(mask: np.ndarray) -> np.ndarray:
    """Centre of mass (voxel units) of a non-empty 3D boolean mask, from its projections (two passes)."""
    counts_kj = np.count_nonzero(mask, axis=2)
    profiles = (counts_kj.sum(axis=1), counts_kj.sum(axis=0), np.count_nonzero(mask, axis=(0, 1)))
    total = float(profiles[0].sum())
    return np.asarray([float(np.dot(np.arange(p.size), p)) / total for p in profiles])


def crossing_point(labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel where the three slices cross: centre of the largest foreground structure, or the volume centre."""
    found = largest_component_mask(labels != 0)
    if found is None:
        return tuple(s // 2 for s in labels.shape)
    component, box = found
    centre = _centre_of_mass(component)
    point = np.clip(np.rint(centre).astype(int), 0, np.asarray(component.shape) - 1)
    if not component[tuple(point)]:  # e.g. a ring: take the structure's voxel nearest to its centre
        step = _stride(component.shape)
        voxels = np.argwhere(component[::step, ::step, ::step]) * step
        if voxels.size == 0:
            voxels = np.argwhere(component)
        point = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
    return tuple(int(p + b.start) for p, b in zip(point, box))  # type: ignore[return-value]


def _slices(array: np.ndarray, point: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through ``point``, rows = the slower axis."""
    k, j, i = point
    return [array[k, :, :], array[:, j, :], array[:, :, i]]


def _extents(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[tuple[float, float, float, float]]:
    """imshow extents in mm (left, right, bottom, top) of the three panels, pixel edges at the borders."""
    size = [n * s for n, s in zip(shape, spacing)]
    return [(0.0, size[2], 0.0, size[1]), (0.0, size[2], 0.0, size[0]), (0.0, size[1], 0.0, size[0])]


def _present_values(labels: np.ndarray) -> list[int]:
    """Sorted nonzero values of a label map (counted in chunks: no full-size temporary)."""
    if labels.size == 0:
        return []
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < 1 << 16:
            flat = labels.reshape(-1)
            counts = np.zeros(high + 1, dtype=np.int64)
            for start in range(0, flat.size, _SAMPLE):
                counts += np.bincount(flat[start : start + _SAMPLE], minlength=high + 1)
            return [int(v) for v in np.flatnonzero(counts) if v]
    return [int(v) for v in np.unique(labels) if v != 0]


def _fill(slice_labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """RGBA image of a label slice: label colours at ``_FILL_ALPHA``, transparent background."""
    rgba = np.zeros(slice_labels.shape + (4,), dtype=np.float32)
    for value in values:
        rgba[slice_labels == value] = (*label_colour(value), _FILL_ALPHA)
    return rgba


def _draw_panel(
    ax, image_slice: np.ndarray, label_slice: np.ndarray, extent, window, values: Sequence[int], title: str
) -> None:
    ax.imshow(
        image_slice, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", extent=extent, interpolation="nearest"
    )
    shown = [v for v in values if np.any(label_slice == v)]
    if shown:
        ax.imshow(_fill(label_slice, shown), origin="lower", extent=extent, interpolation="nearest")
        for value in shown:
            ax.contour(
                (label_slice == value).astype(np.float32),
                levels=[0.5],
                colors=[label_colour(value)],
                linewidths=1.0,
                origin="lower",
                extent=extent,
            )
    ax.set_title(title, color="white", fontsize=9)
    ax.set_aspect("equal")
    ax.set_anchor("N")  # panels of different heights line up at the top
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend_handles(values: Sequence[int], label_names: Mapping[int, str] | None) -> list:
    from matplotlib.patches import Patch

    names: Mapping[Any, str] = label_names or {}  # int keys, or str keys from JSON
    return [
        Patch(
            facecolor=(*label_colour(v), 0.6),
            edgecolor=label_colour(v),
            label=str(names.get(v, names.get(str(v), f"label {v}"))),
        )
        for v in values
    ]


def _write_png(fig, path: Path, dpi: int) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor(), bbox_inches="tight", pad_inches=0.1)
    except OSError as exc:
        raise NnsegError(f"{path}: cannot write ({exc.strerror})") from None
    return path


def overlay_png(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    path: str | os.PathLike,
    *,
    title: str = "",
    label_names: Mapping[int, str] | None = None,
    dpi: int = 120,
) -> Path:
    """Write a PNG of three orthogonal slices with the label map drawn over the image.

    Args:
        image: 3D image, array order ``(k, j, i)``; shown in grey between its 1st and 99th percentiles.
        labels: integer label map of the same shape; each nonzero value gets a semi-transparent
            fill and a contour in its own colour.
        spacing: voxel size in mm, array order; panels are drawn to physical scale.
        path: the PNG to write (atomically: temp file, then rename).
        title: shown above the panels.
        label_names: label value (int, or str as in JSON) -> name for the legend (default ``"label N"``).
        dpi: resolution.

    Returns:
        ``path``.

    Raises:
        ValueError: not 3D, shapes differ, or a bad spacing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image, labels = np.asarray(image), np.asarray(labels)
    spacing = _check_inputs(image, labels, spacing)
    point = crossing_point(labels)
    window = intensity_window(image)
    if np.any(labels > 0):  # show the labelled tissue with contrast (CT air would otherwise set the window)
        inside = np.asarray(image[labels > 0], dtype=np.float64)
        low, high = (float(v) for v in np.percentile(inside[np.isfinite(inside)], (1.0, 99.0)))
        margin = max(high - low, 1e-6) * 1.5
        window = (max(window[0], low - margin), min(window[1], high + margin))
    values = _present_values(labels)
    extents = _extents(image.shape, spacing)

    top_in, bottom_in = 0.6, (0.6 if values else 0.15)
    fig_height = _panel_height_inches(extents) + top_in + bottom_in
    fig = Figure(figsize=(_FIG_WIDTH, fig_height), facecolor="black")  # no pyplot: nothing global to close
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [e[1] for e in extents], "wspace": _WSPACE})
    names = ("axial (k={})", "coronal (j={})", "sagittal (i={})")
    for ax, name, img, lab, extent, index in zip(
        axes, names, _slices(image, point), _slices(labels, point), extents, point
    ):
        ax.set_facecolor("black")
        _draw_panel(ax, np.asarray(img, dtype=np.float32), lab, extent, window, values, name.format(index))
    _decorate(fig, title if values else f"{title} (empty label map)".strip(), values, label_names)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - top_in / fig_height, bottom=bottom_in / fig_height)
    return _write_png(fig, Path(path), dpi)


def _panel_height_inches(extents: Sequence[tuple[float, float, float, float]]) -> float:
    """Height that lets the panels, drawn to scale, fill the figure's width (clamped to 2..9 inches)."""
    widths, heights = [e[1] for e in extents], [e[3] for e in extents]
    inches_per_mm = _FIG_WIDTH * 0.98 * 3 / (3 + 2 * _WSPACE) / sum(widths)
    return min(max(max(heights) * inches_per_mm, 2.0), 9.0)


def _decorate(fig, title: str, values: Sequence[int], label_names: Mapping[int, str] | None) -> None:
    """Figure title and, when there are labels, the legend."""
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    if values:
        legend = fig.legend(
            handles=_legend_handles(values, label_names),
            loc="lower center",
            ncol=min(len(values), 6),
            frameon=False,
            fontsize=9,
        )
        for text in legend.get_texts():
            text.set_color("white")


def _to_closest_ras(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorder/flip a ``(k, j, i)`` array so its axes run closest to (S, A, R); return it with its spacing."""
    orientation = nib.orientations.io_orientation(geometry.affine)
    zooms_ijk = np.linalg.norm(geometry.affine[:3, :3], axis=0)
    turned = nib.orientations.apply_orientation(array.T, orientation).T
    spacing_ijk = np.empty(3)
    spacing_ijk[orientation[:, 0].astype(int)] = zooms_ijk
    return np.ascontiguousarray(turned), tuple(float(s) for s in spacing_ijk[::-1])  # type: ignore[return-value]


def overlay_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    label_names: Mapping[int, str] | None = None,
    title: str | None = None,
) -> Path:
    """Read an image (first channel of a multi-channel file) and a label map and write :func:`overlay_png`.

    The arrays are first turned to the closest RAS orientation, so the panels are truly axial,
    coronal and sagittal whatever the file's axis order.

    Args:
        image_path: the image file.
        label_path: its label map (or a prediction), on the same voxel grid.
        out_path: the PNG to write.
        label_names: label value -> name for the legend.
        title: default: the label file's name.

    Raises:
        NnsegError: a file cannot be read, or the two files do not share a voxel grid.
    """
    image_vol, label_vol = read_volume(image_path), read_volume(label_path)
    image = image_vol.array[0] if image_vol.array.ndim == 4 else image_vol.array
    labels = label_vol.array[0] if label_vol.array.ndim == 4 else label_vol.array
    if not image_vol.geometry.matches(label_vol.geometry):
        raise NnsegError(
            f"{label_path}: voxel grid differs from the image {image_path}: label "
            f"shape {label_vol.geometry.shape}, {label_vol.geometry.describe()}; image shape "
            f"{image_vol.geometry.shape}, {image_vol.geometry.describe()}"
        )
    image, spacing = _to_closest_ras(image, image_vol.geometry)
    labels, _ = _to_closest_ras(labels, image_vol.geometry)
    return overlay_png(
        image,
        labels,
        spacing,
        out_path,
        title=Path(label_path).name if title is None else title,
        label_names=label_names,
    )
