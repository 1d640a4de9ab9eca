"""Write label maps as DICOM Segmentation objects (and read them back).

The label map lives on the grid of its DICOM source series: slice ``k`` of the ``(k, j, i)`` array is
the source slice whose ImagePositionPatient is ``k``-th along the slice normal (``row cosines x column
cosines``, ascending), and ``(j, i)`` are (row, column) of that slice's pixel array. Files come from
highdicom, an optional dependency (``pip install nnseg[dicom]``) imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError
from nnseg.version import __version__

if TYPE_CHECKING:
    import pydicom

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: Added to the source's SeriesNumber when ``series_number`` is not given.
SERIES_NUMBER_OFFSET = 1000
_VALUE_NOTE = "nnseg label value {}"
_VALUE_PATTERN = re.compile(r"^nnseg label value (\d+)$")
_SAME_SLICE_MM = 1e-3  # slice positions closer than this along the normal are the same slice


def _highdicom() -> ModuleType:
    try:
        import highdicom
        import pydicom  # noqa: F401
    except ImportError as exc:
        raise NnsegError("writing DICOM-SEG needs highdicom: pip install nnseg[dicom]") from exc
    return highdicom


def _normal(orientation: Sequence[float]) -> np.ndarray:
    cosines = np.asarray([float(v) for v in orientation], dtype=np.float64)
    if cosines.shape != (6,):
        raise NnsegError(f"ImageOrientationPatient needs 6 values, got {len(cosines)}")
    return np.cross(cosines[:3], cosines[3:])


def _offset(normal: np.ndarray, item: Any) -> float:
    """Position of a slice (anything with ImagePositionPatient) along the slice normal, in mm."""
    return float(np.dot(normal, [float(v) for v in item.ImagePositionPatient]))


def sort_source_slices(source_datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Order single-frame source slices along the slice normal (ascending): index ``k`` of the label map.

    Raises:
        NnsegError: no slices, multi-frame images, missing or differing orientation or size, repeated positions.
    """
    if not source_datasets:
        raise NnsegError("no source DICOM slices given")
    first = source_datasets[0]
    for ds in source_datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise NnsegError(f"source image {ds.get('SOPInstanceUID', '?')} is multi-frame; only single-frame series")
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise NnsegError(f"source image {ds.get('SOPInstanceUID', '?')} has no ImagePosition/OrientationPatient")
        if not np.allclose(
            [float(v) for v in ds.ImageOrientationPatient], [float(v) for v in first.ImageOrientationPatient], atol=1e-4
        ):
            raise NnsegError("source slices differ in ImageOrientationPatient: not one series")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise NnsegError("source slices differ in Rows/Columns: not one series")
    normal = _normal(first.ImageOrientationPatient)
    ordered = sorted(source_datasets, key=lambda ds: _offset(normal, ds))
    if np.any(np.diff([_offset(normal, ds) for ds in ordered]) <= _SAME_SLICE_MM):
        raise NnsegError("two source slices share a position along the slice normal")
    return ordered


def _segments(labels: Mapping[str, int]) -> list[tuple[str, int]]:
    """Non-background ``(name, value)`` pairs sorted by value; segment ``n`` is item ``n - 1``."""
    pairs = []
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise NnsegError(f"label {name!r}: value must be an integer, got {value!r}")
        if value < 0:
            raise NnsegError(f"label {name!r}: value must be >= 0, got {value}")
        if value != 0:
            if not str(name).strip() or len(str(name)) > 64 or "\\" in str(name):
                raise NnsegError(f"label {name!r}: a segment label needs 1 to 64 characters and no backslash")
            pairs.append((str(name), int(value)))
    values = [v for _, v in pairs]
    if len(set(values)) != len(values):
        raise NnsegError(f"labels share a value: {dict(labels)}")
    return sorted(pairs, key=lambda p: p[1])


def write_dicom_seg(
    label_map: np.ndarray,
    source_datasets: Sequence[pydicom.Dataset],
    labels: Mapping[str, int],
    output: str | Path,
    *,
    algorithm_name: str = "nnseg",
    algorithm_version: str = __version__,
    series_description: str = "nnseg segmentation",
    series_number: int | None = None,
) -> Path:
    """Write ``label_map`` as a BINARY DICOM Segmentation of ``source_datasets``, atomically; returns ``output``.

    Args:
        label_map: integer array ``(k, j, i)`` on the source grid: ``k`` indexes the source slices sorted by
            position along the slice normal (see :func:`sort_source_slices`), ``(j, i)`` = (row, column).
        source_datasets: the source series' single-frame slices, in any order.
        labels: name -> value; value 0 (background) is skipped. Segments are numbered 1..N by ascending value,
            labelled with the name, and carry ``SegmentDescription = "nnseg label value <value>"``. Every label
            gets a segment, also one with no voxels (a consumer sees the full label set of the model).
        output: the file to write (conventionally ``.dcm``); its folder is created.
        series_number: defaults to the source's SeriesNumber + 1000.

    Every (segment, slice) pair is stored, empty or not (``omit_empty_frames=False``), so the SEG has
    ``N * len(source_datasets)`` frames and the grid can be rebuilt from the SEG alone; an all-background
    map gives all-empty frames. Frames are 1 bit per pixel.

    Raises:
        NnsegError: highdicom missing, a shape mismatch, or label values that ``labels`` does not name.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    ordered = sort_source_slices(source_datasets)
    label_map = np.asarray(label_map)
    expected = (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns))
    if label_map.shape != expected:
        raise NnsegError(
            f"label map shape {label_map.shape} does not match the source series shape {expected}"
            " (slices, rows, columns)"
        )
    if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
        raise NnsegError(f"label map must hold integers, got dtype {label_map.dtype}")
    segments = _segments(labels)
    if not segments:
        raise NnsegError(f"no non-background labels in {dict(labels)}")
    present = {int(v) for v in np.unique(label_map)} - {0}
    unnamed = sorted(present - {v for _, v in segments})
    if unnamed:
        raise NnsegError(f"label map holds values {unnamed} that labels {dict(labels)} does not name")

    # label value -> segment number; highdicom reads a 3D uint8/uint16 array as a label map of segment numbers
    numbers = np.zeros(segments[-1][1] + 1, dtype=np.uint8 if len(segments) < 256 else np.uint16)
    for number, (_, value) in enumerate(segments, start=1):
        numbers[value] = number
    pixels = numbers[label_map.view(np.uint8) if label_map.dtype == np.bool_ else label_map]  # no negatives left

    if series_number is None:
        source_number = ordered[0].get("SeriesNumber")
        series_number = (int(source_number) if source_number not in (None, "") else 0) + SERIES_NUMBER_OFFSET
    try:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
        )
        concept = hd.sr.CodedConcept(value="91723000", scheme_designator="SCT", meaning="Anatomical structure")
        descriptions = []
        for number, (name, value) in enumerate(segments, start=1):
            description = hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=concept,
                segmented_property_type=concept,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
            description.SegmentDescription = _VALUE_NOTE.format(value)
            descriptions.append(description)

        seg = hd.seg.Segmentation(
            source_images=ordered,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="nnseg",
            manufacturer_model_name="nnseg",
            software_versions=f"nnseg {__version__}",
            device_serial_number="0",
            series_description=series_description,
            omit_empty_frames=False,
        )
    except (ValueError, AttributeError) as exc:  # highdicom's checks; a source attribute it needs is missing
        raise NnsegError(f"cannot build a DICOM-SEG from these source images: {exc}") from exc
    output = Path(output)
    with atomic_path(output, suffix=".dcm") as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return output


def _segment_values(seg: Any) -> dict[int, tuple[str, int]]:
    """Segment number -> (label name, label value); the value from nnseg's note, else the segment number."""
    result = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _VALUE_PATTERN.match(str(item.get("SegmentDescription", "")))
        result[number] = (str(item.SegmentLabel), int(match[1]) if match else number)
    return result


def read_dicom_seg_labels(
    path: str | Path, *, source_datasets: Sequence[pydicom.Dataset] | None = None
) -> tuple[dict[str, int], np.ndarray]:
    """Read a DICOM-SEG into ``(labels, label_map)`` on its source grid (see :func:`write_dicom_seg`).

    ``labels`` maps segment labels to label values (from nnseg's "nnseg label value" note; segment numbers for
    SEGs written by other tools). Without ``source_datasets`` the grid is the frames' distinct plane positions,
    which needs a SEG that stores every source slice (as :func:`write_dicom_seg` does); pass the source series
    to read a SEG that omits empty frames. Where segments overlap, the higher segment number wins; in a
    FRACTIONAL SEG any non-zero value counts.

    Raises:
        NnsegError: highdicom missing, an unreadable file, or a SEG whose grid cannot be rebuilt.
    """
    hd = _highdicom()
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # pydicom/highdicom raise many kinds for a bad file
        raise NnsegError(f"{path}: not a readable DICOM Segmentation ({exc})") from exc
    segments = _segment_values(seg)
    labels = {name: value for name, value in segments.values()}
    if str(seg.SegmentationType) not in ("BINARY", "FRACTIONAL"):
        raise NnsegError(f"{path}: {seg.SegmentationType} segmentations are not supported (BINARY, FRACTIONAL are)")
    frames = seg.PerFrameFunctionalGroupsSequence
    shared = seg.SharedFunctionalGroupsSequence[0]

    def group(frame: Any, name: str) -> Any:  # a functional group: per frame, else shared
        return frame.get(name, shared.get(name))[0]

    normal = _normal(group(frames[0], "PlaneOrientationSequence").ImageOrientationPatient)
    offsets = np.array([_offset(normal, group(f, "PlanePositionSequence")) for f in frames])
    rows, columns = int(seg.Rows), int(seg.Columns)
    if source_datasets is not None:
        ordered = sort_source_slices(source_datasets)
        if (int(ordered[0].Rows), int(ordered[0].Columns)) != (rows, columns):
            raise NnsegError(f"{path}: frames of {rows}x{columns} pixels do not match the source slices")
        grid = np.array([_offset(normal, ds) for ds in ordered])
    else:
        grid = np.unique(offsets)
        grid = grid[np.concatenate([[True], np.diff(grid) > _SAME_SLICE_MM])]
        referenced = sum(len(s.ReferencedInstanceSequence) for s in seg.get("ReferencedSeriesSequence", []))
        if referenced > len(grid):
            raise NnsegError(
                f"{path}: the SEG stores {len(grid)} slices of its {referenced} source slices (empty ones omitted); "
                "pass source_datasets to rebuild the grid"
            )
    nearest = np.abs(offsets[:, None] - grid[None, :]).argmin(axis=1)
    off_grid = np.abs(grid[nearest] - offsets) > _SAME_SLICE_MM
    if off_grid.any():
        raise NnsegError(
            f"{path}: frames at slice offsets {sorted(offsets[off_grid].tolist())} mm lie on no source slice"
        )
    numbers = [int(group(f, "SegmentIdentificationSequence").ReferencedSegmentNumber) for f in frames]
    pixels = seg.pixel_array.reshape(len(frames), rows, columns)
    top = max((value for _, value in segments.values()), default=0)
    label_map = np.zeros((len(grid), rows, columns), dtype=np.uint8 if top < 256 else np.uint16)
    for n in sorted(range(len(frames)), key=numbers.__getitem__):
        label_map[nearest[n]][pixels[n] > 0] = segments[numbers[n]][1]
    return labels, label_map
