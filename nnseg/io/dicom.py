"""Read (and write) single-frame DICOM image series as volumes.

A series becomes a :class:`~nnseg.io.images.Volume` with the same geometry convention as every other
reader: the i axis runs along a DICOM row (ImageOrientationPatient's first cosine), j down the columns,
k along the slice normal (row x column), with slices sorted by their position on that normal, so the
stack is always right-handed. Geometry comes from ImageOrientationPatient, ImagePositionPatient and
PixelSpacing only (never SliceThickness). What cannot be one regular grid is refused: mixed orientations,
non-uniform or missing slices, gantry tilt, duplicate positions, differing image sizes, single slices and
Enhanced multi-frame files. pydicom is an optional dependency (``pip install nnseg[dicom]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nnseg.atomic import atomic_path
from nnseg.errors import ImageReadError, NnsegError, one_line
from nnseg.io.geometry import Geometry, Volume

__all__ = [
    "DicomSeriesError",
    "SeriesInfo",
    "is_dicom_folder",
    "list_series",
    "read_dicom_series",
    "write_dicom_series",
]

#: File suffixes taken as DICOM without looking inside; other files count when bytes 128..132 are ``DICM``.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Relative tolerance (of the slice gap) for uniform spacing and for in-plane drift between slices.
SPACING_RTOL = 1e-3
#: Absolute floor (mm) of the same tolerances, for positions rounded by the scanner.
SPACING_ATOL_MM = 1e-4
#: Largest difference between direction cosines still taken as the same orientation.
ORIENTATION_ATOL = 1e-4


class DicomSeriesError(ImageReadError):
    """A DICOM folder holds no readable series, several of them, or one that is not a regular 3D grid."""


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder (from headers only).

    Attributes:
        series_instance_uid: SeriesInstanceUID shared by the files.
        description: SeriesDescription ("" when absent).
        modality: Modality, e.g. "CT" or "MR" ("" when absent).
        n_files: number of image files in the series.
        files: the files, sorted by name.
    """

    series_instance_uid: str
    description: str
    modality: str
    n_files: int
    files: tuple[Path, ...]


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise NnsegError("reading DICOM needs pydicom: pip install nnseg[dicom]") from None
    return pydicom


def _is_dicom_file(path: Path) -> bool:
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_dicom_file(p))


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory directly holding at least one DICOM file."""
    folder = Path(path)
    return folder.is_dir() and any(_is_dicom_file(p) for p in folder.iterdir())


def _checked_folder(folder: str | os.PathLike) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise DicomSeriesError(f"{path}: not a folder; pass the folder that holds the DICOM files of one series")
    return path


def _read_headers(folder: Path) -> list[tuple[Path, Any]]:
    """Headers of the image files (those with Rows and Columns); other DICOM objects are skipped."""
    pydicom = _pydicom()
    headers = []
    for path in _dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many types for broken files
            raise DicomSeriesError(
                f"{path}: not a readable DICOM file ({type(exc).__name__}: {one_line(exc)}); remove it from {folder}"
            ) from None
        if "Rows" in ds and "Columns" in ds and "SeriesInstanceUID" in ds:
            headers.append((path, ds))
    return headers


def _group(headers: list[tuple[Path, Any]]) -> dict[str, list[tuple[Path, Any]]]:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return groups


def _info(uid: str, members: list[tuple[Path, Any]]) -> SeriesInfo:
    first = members[0][1]
    return SeriesInfo(
        series_instance_uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        n_files=len(members),
        files=tuple(sorted(path for path, _ in members)),
    )


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The image series directly inside ``folder``, read from headers only, sorted by UID.

    Raises:
        DicomSeriesError: ``folder`` is not a folder, or one of its DICOM files cannot be parsed.
    """
    path = _checked_folder(folder)
    return [_info(uid, members) for uid, members in sorted(_group(_read_headers(path)).items())]


def _describe(info: SeriesInfo) -> str:
    what = " ".join(part for part in (info.modality, repr(info.description) if info.description else "") if part)
    return f"  {info.series_instance_uid} ({what + ', ' if what else ''}{info.n_files} files)"


def _pick_series(folder: Path, series_uid: str | None) -> list[tuple[Path, Any]]:
    headers = _read_headers(folder)
    groups = _group(headers)
    if not groups:
        raise DicomSeriesError(f"{folder}: holds no DICOM image files; pass the folder of one image series")
    infos = [_info(uid, members) for uid, members in sorted(groups.items())]
    choices = "\n".join(_describe(info) for info in infos)
    if series_uid is None:
        if len(groups) > 1:
            raise DicomSeriesError(
                f"{folder}: holds {len(groups)} DICOM series; pick one with --series UID "
                f"(series_uid= in Python):\n{choices}"
            )
        return next(iter(groups.values()))
    if series_uid not in groups:
        raise DicomSeriesError(f"{folder}: has no series {series_uid}; the series there are:\n{choices}")
    return groups[series_uid]


def _floats(ds: Any, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise DicomSeriesError(
            f"{path}: {keyword} is missing or malformed ({value!r}); nnseg needs ImageOrientationPatient, "
            "ImagePositionPatient and PixelSpacing to place a slice (is this a localizer or secondary capture?)"
        )
    return values


@dataclass
class _Slice:
    path: Path
    ds: Any
    position: np.ndarray
    distance: float = 0.0


def _check_frames(folder: Path, members: list[tuple[Path, Any]]) -> None:
    for path, ds in members:
        frames = ds.get("NumberOfFrames")
        if (frames is not None and int(frames) > 1) or "PerFrameFunctionalGroupsSequence" in ds:
            raise DicomSeriesError(
                f"{path}: is a multi-frame (Enhanced) DICOM image ({frames} frames); nnseg reads series of "
                "single-frame files only: convert it to NIfTI first (e.g. dcm2niix) or export classic single-frame "
                f"images into {folder}"
            )
    if len(members) < 2:
        raise DicomSeriesError(
            f"{members[0][0]}: the series has a single slice; a 3D volume needs at least 2 slices "
            f"(put all slices of the series in {folder})"
        )


def _stack_geometry(folder: Path, members: list[tuple[Path, Any]]) -> tuple[list[_Slice], Geometry]:
    """Check that the slices form one regular grid; return them sorted along the normal and their geometry."""
    _check_frames(folder, members)
    first_path, first = members[0]
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    if len(sizes) > 1:
        raise DicomSeriesError(
            f"{folder}: slices differ in size (rows x columns: {', '.join(f'{r}x{c}' for r, c in sorted(sizes))}); "
            "a volume needs one image size: keep only the files of one series"
        )
    iop = _floats(first, "ImageOrientationPatient", 6, first_path)
    pixel_spacing = _floats(first, "PixelSpacing", 2, first_path)
    slices = []
    for path, ds in members:
        other = _floats(ds, "ImageOrientationPatient", 6, path)
        if np.abs(other - iop).max() > ORIENTATION_ATOL:
            raise DicomSeriesError(
                f"{folder}: mixed slice orientations: {first_path.name} has ImageOrientationPatient "
                f"{iop.round(5).tolist()}, {path.name} has {other.round(5).tolist()}; a volume needs one "
                "orientation: keep only the files of one stack (or convert with dcm2niix)"
            )
        if np.abs(_floats(ds, "PixelSpacing", 2, path) - pixel_spacing).max() > SPACING_ATOL_MM:
            raise DicomSeriesError(f"{folder}: PixelSpacing differs between {first_path.name} and {path.name}")
        slices.append(_Slice(path, ds, _floats(ds, "ImagePositionPatient", 3, path)))
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    if abs(float(row @ col)) > ORIENTATION_ATOL * 10:
        raise DicomSeriesError(f"{first_path}: ImageOrientationPatient {iop.tolist()} has non-perpendicular axes")
    normal = np.cross(row, col)
    for item in slices:
        item.distance = float(item.position @ normal)
    slices.sort(key=lambda s: s.distance)
    gaps = np.diff([s.distance for s in slices])
    smallest = int(np.argmin(gaps))
    reference = float(np.median(gaps))
    if gaps[smallest] <= max(SPACING_RTOL * reference, SPACING_ATOL_MM):
        a, b = slices[smallest], slices[smallest + 1]
        raise DicomSeriesError(
            f"{folder}: {a.path.name} and {b.path.name} sit at the same position ({b.position.round(4).tolist()} "
            "mm); the folder mixes several acquisitions, echoes or time points: keep the files of one"
        )
    _check_spacing(folder, slices, gaps)
    steps = np.diff([s.position for s in slices], axis=0)
    drift = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > max(SPACING_RTOL * gaps[worst], SPACING_ATOL_MM):
        angle = np.degrees(np.arctan2(drift[worst], gaps[worst]))
        tilt = slices[0].ds.get("GantryDetectorTilt")
        raise DicomSeriesError(
            f"{folder}: the slices are sheared (gantry tilt?): from {slices[worst].path.name} to "
            f"{slices[worst + 1].path.name} the position moves {drift[worst]:.4g} mm in-plane for {gaps[worst]:.4g} "
            f"mm along the slice normal ({angle:.3g} degrees{f', GantryDetectorTilt {tilt}' if tilt else ''}); "
            "a sheared stack is not a regular grid: convert with dcm2niix, which corrects gantry tilt"
        )
    spacing_k = (slices[-1].distance - slices[0].distance) / (len(slices) - 1)
    direction = np.stack([row, col, normal], axis=1)
    rows, columns = sizes.pop()
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), float(spacing_k))  # i: along a row, j: down
    origin, flat = tuple(slices[0].position.tolist()), tuple(direction.ravel().tolist())
    return slices, Geometry.from_itk(spacing, origin, flat, (len(slices), rows, columns))


def _check_spacing(folder: Path, slices: list[_Slice], gaps: np.ndarray) -> None:
    smallest = float(gaps.min())
    tolerance = max(SPACING_RTOL * smallest, SPACING_ATOL_MM)
    if float(gaps.max()) - smallest <= tolerance:
        return
    multiples = gaps / smallest
    if np.all(np.abs(multiples - np.round(multiples)) * smallest <= max(tolerance, 0.05 * smallest)):
        where = [
            f"{slices[n].path.name} -> {slices[n + 1].path.name}: {gaps[n]:.4g} mm"
            for n in np.flatnonzero(np.round(multiples) > 1)
        ]
        missing = int(np.round(multiples).sum()) - len(gaps)
        raise DicomSeriesError(
            f"{folder}: {missing} slice(s) missing: the slices are {smallest:.4g} mm apart except at "
            f"{'; '.join(where[:5])}; add the missing files (or export the series again)"
        )
    raise DicomSeriesError(
        f"{folder}: non-uniform slice spacing: gaps between neighbouring slices range from {smallest:.4g} to "
        f"{float(gaps.max()):.4g} mm; nnseg needs a regular grid: resample the series (e.g. convert with dcm2niix "
        "and resample) or keep only a uniformly spaced part"
    )


def series_headers(folder: str | os.PathLike, *, series_uid: str | None = None) -> list[Any]:
    """The headers (no pixel data) of the series :func:`read_dicom_series` reads: the source of a DICOM-SEG."""
    path = _checked_folder(folder)
    return [ds for _, ds in _pick_series(path, series_uid)]


def series_geometry(folder: str | os.PathLike, *, series_uid: str | None = None) -> Geometry:
    """The geometry of the series, from its headers only (every check of :func:`read_dicom_series` applies)."""
    path = _checked_folder(folder)
    return _stack_geometry(path, _pick_series(path, series_uid))[1]


def read_dicom_series(
    folder: str | os.PathLike, *, series_uid: str | None = None, dtype: npt.DTypeLike | None = None
) -> Volume:
    """Read one single-frame DICOM image series as a volume.

    Args:
        folder: the folder directly holding the series' files (other DICOM objects without pixels are ignored).
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        dtype: convert to this type; by default int16 when the rescaled values (RescaleSlope/Intercept
            applied, e.g. CT in HU) are whole numbers that fit, else float32.

    Returns:
        Array order ``(k, j, i)``: slices sorted along the normal, rows, columns; geometry in RAS+ mm.

    Raises:
        DicomSeriesError: no series, several without ``series_uid``, an unknown ``series_uid``, or slices that
            are not one regular 3D grid; the message names the folder or file and what to do.
    """
    path = _checked_folder(folder)
    members = _pick_series(path, series_uid)
    slices, geometry = _stack_geometry(path, members)
    pydicom = _pydicom()
    out = np.empty(geometry.shape, dtype=np.float32 if dtype is None else np.dtype(dtype))
    integral, low, high = True, np.inf, -np.inf
    for k, item in enumerate(slices):
        try:
            pixels = pydicom.dcmread(item.path).pixel_array
        except Exception as exc:  # missing pixel data, unsupported compression, truncation
            raise DicomSeriesError(
                f"{item.path}: the pixel data cannot be read ({type(exc).__name__}: {one_line(exc)})"
            ) from None
        if pixels.shape != geometry.shape[1:]:
            raise DicomSeriesError(
                f"{item.path}: pixel data has shape {pixels.shape}, expected {geometry.shape[1:]} (one frame, "
                "one sample per pixel); nnseg reads monochrome single-frame images"
            )
        slope = float(item.ds.get("RescaleSlope", 1) or 1)
        intercept = float(item.ds.get("RescaleIntercept", 0) or 0)
        values = pixels.astype(np.float64) * slope + intercept
        if dtype is None and values.size:
            integral = integral and bool(np.all(np.mod(values, 1) == 0))
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        out[k] = values
    if dtype is None and integral and np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max:
        out = out.astype(np.int16)
    return Volume(out, geometry)


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return str(format_number_as_ds(float(value)))


def _rescale(array: np.ndarray) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept storing ``array`` as int16 (exactly for whole numbers in a 65536 range)."""
    low, high = float(array.min()), float(array.max())
    info = np.iinfo(np.int16)
    whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if whole and high - low <= info.max - info.min:
        shift = 0.0 if info.min <= low and high <= info.max else low - info.min
        return 1.0, float(_ds(shift))
    slope = float(_ds(max(high - low, 1e-12) / (info.max - info.min)))
    return slope, float(_ds(low - info.min * slope))


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "NNSEG",
    description: str = "nnseg",
    series_number: int = 1,
    prefix: str = "slice_",
) -> list[Path]:
    """Write a 3D volume as a CT or MR Image Storage series, one single-frame file per slice along k.

    Pixels are stored as int16 with RescaleSlope 1 for whole numbers (intercept 0 where they fit int16),
    otherwise scaled over the value range (relative error below 1e-5 of the range).

    Args:
        volume: a 3D volume; its geometry must have perpendicular axes (DICOM cannot store a sheared grid).
        folder: created if needed; files are named ``{prefix}{k + 1:04d}.dcm`` and never overwritten.
        modality: "CT" or "MR".
        series_uid, study_uid: UIDs to use; generated when None.

    Returns:
        The written files, in slice order.
    """
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    array, geometry = np.asarray(volume.array), volume.geometry
    if array.ndim != 3 or array.shape != geometry.shape or array.size == 0:
        raise NnsegError(f"write_dicom_series needs a non-empty 3D volume matching its geometry, got {array.shape}")
    if modality not in ("CT", "MR"):
        raise NnsegError(f"modality must be 'CT' or 'MR', got {modality!r}")
    if not np.all(np.isfinite(array)):
        raise NnsegError("the volume holds NaN or infinite values, which DICOM integer pixels cannot store")
    spacing, origin, direction_flat = geometry.to_itk()
    direction = np.asarray(direction_flat).reshape(3, 3)
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:  # headers round directions to ~1e-5
        raise NnsegError("the volume's axes are not perpendicular (sheared grid); DICOM series cannot store it")
    folder = Path(folder)
    paths = [folder / f"{prefix}{k + 1:04d}.dcm" for k in range(array.shape[0])]
    existing = [p for p in paths if p.exists()]
    if existing:
        raise NnsegError(f"{existing[0]}: exists already; write into an empty folder or pass another prefix=")
    slope, intercept = _rescale(array)
    sop_class = UID(CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    iop = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    step = direction[:, 2] * spacing[2]
    for k, path in enumerate(paths):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"{patient_id}^", patient_id, "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer, ds.PositionReferenceIndicator = "", "nnseg", ""
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, series_number, description
        ds.InstanceNumber, ds.AcquisitionNumber, ds.PatientPosition = k + 1, 1, ""
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        if modality == "CT":
            ds.KVP = ""
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
            ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "3D", "", "", ""
        position = np.asarray(origin) + k * step
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.SliceLocation = _ds(float(position @ direction[:, 2]))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        ds.RescaleType = "HU" if modality == "CT" else "US"
        stored = np.rint((array[k].astype(np.float64) - intercept) / slope)
        ds.PixelData = np.clip(stored, -32768, 32767).astype("<i2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        with atomic_path(path, suffix=".dcm") as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return paths
