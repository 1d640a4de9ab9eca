"""Read and write volumes with their geometry.

NIfTI (``.nii``, ``.nii.gz``) goes through nibabel: it raises on truncated files and
keeps NaN/Inf, where SimpleITK's NIfTI reader silently zero-fills and zeroes them.
MetaImage and NRRD (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) go through SimpleITK, imported only then
(0.3 s of every command's start-up otherwise).
Arrays come back in array order ``(k, j, i)`` or ``(c, k, j, i)`` (see
:mod:`nnseg.io.geometry`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.arrayproxy import ArrayProxy
from nibabel.openers import ImageOpener
from nibabel.volumeutils import apply_read_scaling

from nnseg.atomic import atomic_path
from nnseg.errors import ImageReadError, NnsegError
from nnseg.io.geometry import Geometry, Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
#: Stored voxel bytes read (and converted) at a time when a NIfTI file is read with a ``dtype``.
READ_CHUNK_BYTES = 1 << 24


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """Split a file name into (stem, known image suffix), e.g. ``("case_0000", ".nii.gz")``.

    Raises:
        ImageReadError: the suffix is not a supported image format.
    """
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    raise ImageReadError(f"{path}: unsupported file type; nnseg reads {', '.join(IMAGE_SUFFIXES)}")


def _is_nifti(path: Path) -> bool:
    return split_suffix(path)[1] in NIFTI_SUFFIXES


_QFORM_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")


def _nifti_geometry(img: nib.Nifti1Image | nib.Nifti2Image, spatial_shape: tuple[int, ...]) -> Geometry:
    header = img.header
    qform_code = int(header["qform_code"])
    sform_code = int(header["sform_code"])
    qform_params = None
    if qform_code:
        pixdim = header["pixdim"]
        qform_params = tuple(float(header[f]) for f in _QFORM_FIELDS) + (
            float(pixdim[0]),
            float(pixdim[1]),
            float(pixdim[2]),
            float(pixdim[3]),
        )
    return Geometry(
        affine=img.affine,
        shape=tuple(reversed(spatial_shape)),
        qform_params=qform_params,
        qform_code=int(qform_code or 0),
        sform_code=int(sform_code or 0),
        nifti_version=2 if isinstance(img, nib.Nifti2Image) else 1,
    )


def _nifti_data(img: nib.Nifti1Image | nib.Nifti2Image, path: Path, dtype: np.dtype | None) -> np.ndarray:
    """The voxels in file order and Fortran layout, scaled by the header's slope and intercept as nibabel does.

    With ``dtype`` the file is read a slab at a time straight into the result (no full-size copy in the
    stored type, none in float64 for scaled files, and no decompressed copy of the whole file).

    Raises:
        OSError: the file holds fewer voxels than its header says.
    """
    if dtype is None:
        return np.asanyarray(img.dataobj)
    proxy = cast(ArrayProxy, img.dataobj)
    shape, stored = tuple(int(s) for s in proxy.shape), np.dtype(proxy.dtype)
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    out = np.empty(shape, dtype=dtype, order="F")
    if out.size == 0:
        return out
    planes = out.reshape((shape[0], shape[1], -1), order="F")  # a view: file order is (i, j, k[, c])
    per_chunk = max(1, READ_CHUNK_BYTES // (shape[0] * shape[1] * stored.itemsize))
    buffer = np.empty(shape[0] * shape[1] * min(per_chunk, planes.shape[2]), dtype=stored)
    with ImageOpener(str(path)) as handle:
        handle.seek(proxy.offset)
        for start in range(0, planes.shape[2], per_chunk):
            count = min(per_chunk, planes.shape[2] - start)
            raw = buffer[: shape[0] * shape[1] * count]
            wanted = raw.view(np.uint8)
            done = 0
            while done < wanted.size:
                read = handle.readinto(wanted[done:].data)
                if not read:
                    raise OSError(f"expected {planes.size * stored.itemsize} voxel bytes, the file ends earlier")
                done += read
            raw = raw.reshape((shape[0], shape[1], count), order="F")
            planes[:, :, start : start + count] = apply_read_scaling(raw, slope, inter)
    return out


def _load_nifti(path: Path, *, with_data: bool, dtype: np.dtype | None = None) -> Volume:
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises many types for broken headers
        raise ImageReadError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(f"{path}: not a NIfTI image (nibabel sees {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise ImageReadError(f"{path}: image is {len(shape)}D (shape {shape}); nnseg needs 3D volumes")
    if len(shape) > 4:
        raise ImageReadError(
            f"{path}: image is {len(shape)}D (shape {shape}); nnseg reads 3D volumes or 4D channel stacks"
        )
    geometry = _nifti_geometry(img, shape[:3])
    if not with_data:
        return Volume(np.empty((0,)), geometry)
    try:
        data = _nifti_data(img, path, dtype)
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: file is truncated or corrupt, the voxel data cannot be read ({exc})") from None
    return Volume(np.ascontiguousarray(data.T), geometry)


def _load_itk(path: Path, *, with_data: bool, dtype: np.dtype | None = None) -> Volume:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    size = reader.GetSize()
    dim = reader.GetDimension()
    if dim != 3:
        raise ImageReadError(f"{path}: image is {dim}D (size {size}); nnseg needs 3D volumes")
    geometry = Geometry.from_itk(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), tuple(reversed(size)))
    if not with_data:
        return Volume(np.empty((0,)), geometry)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: file is truncated or corrupt ({str(exc).strip().splitlines()[-1]})") from None
    # with a dtype, convert from a view of ITK's buffer: no copy in the stored type
    data = sitk.GetArrayFromImage(image) if dtype is None else sitk.GetArrayViewFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        data = np.moveaxis(data, -1, 0)
    return Volume(np.ascontiguousarray(data, dtype=dtype), geometry)


def read_volume(path: str | os.PathLike, *, dtype: npt.DTypeLike | None = None) -> Volume:
    """Read an image or label file with its geometry.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd`` or ``.nhdr`` file, or a folder holding one
            DICOM series (:func:`nnseg.io.dicom.read_dicom_series`).
        dtype: convert to this type while reading (e.g. float32 for images: the same values as
            ``read_volume(path).array.astype(dtype)``, without a full-size array of the stored type).

    Returns:
        The voxel data in its stored dtype (as nibabel scales it, for NIfTI) or ``dtype``, array order
        ``(k, j, i)`` or ``(c, k, j, i)``.

    Raises:
        ImageReadError: missing, unreadable, truncated, or not 3D/4D; the message names the file.
    """
    path = Path(path)
    wanted = None if dtype is None else np.dtype(dtype)
    if path.is_dir():  # a DICOM series folder
        from nnseg.io.dicom import read_dicom_series

        return read_dicom_series(path, dtype=wanted)
    if _is_nifti(path):
        return _load_nifti(path, with_data=True, dtype=wanted)
    return _load_itk(path, with_data=True, dtype=wanted)


def read_geometry(path: str | os.PathLike) -> tuple[Geometry, int]:
    """Read only the header: the geometry and the number of channels (1 for a 3D file or a DICOM series)."""
    path = Path(path)
    if path.is_dir():  # a DICOM series folder: the geometry comes from its headers
        from nnseg.io.dicom import series_geometry

        return series_geometry(path), 1
    if _is_nifti(path):
        volume = _load_nifti(path, with_data=False)
        shape: tuple[int, ...] = getattr(nib.load(str(path)), "shape", ())
        return volume.geometry, int(shape[3]) if len(shape) == 4 else 1
    volume = _load_itk(path, with_data=False)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return volume.geometry, int(reader.GetNumberOfComponents())


def read_label_map(path: str | os.PathLike) -> Volume:
    """Read a label map: a 3D integer array (a singleton channel axis is dropped; whole-number floats accepted).

    Raises:
        ImageReadError: unreadable, several channels, or non-integer values; the message names the file.
    """
    volume = read_volume(path)
    array = volume.array
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ImageReadError(f"{path}: has {array.shape[0]} channels (shape {array.shape}); a label map must be 3D")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise ImageReadError(f"{path}: is not a label map: it holds non-integer values ({array.dtype})")
        array = array.astype(np.int64)
    return Volume(array, volume.geometry)


def label_dtype_for(array: np.ndarray) -> np.dtype:
    """Smallest unsigned/signed integer dtype holding every value of a label map."""
    if array.size == 0:
        return np.dtype(np.uint8)
    low, high = int(array.min()), int(array.max())
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise NnsegError(f"label values {low}..{high} do not fit a 32-bit integer")


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    geometry: Geometry,
    *,
    is_label: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write an array with the given geometry, atomically (temp file, then rename).

    Args:
        path: destination; the suffix picks the format (.nii.gz, .nii, .mha or .nrrd).
        array: array order ``(k, j, i)``; its shape must equal ``geometry.shape``.
        geometry: e.g. the geometry of the image a prediction was made from.
        is_label: store as the smallest integer type (uint8 where it fits); values must be integers.
        overwrite: when False, refuse to replace an existing file.

    Returns:
        The written path.
    """
    path = Path(path)
    _, suffix = split_suffix(path)
    if suffix in (".mhd", ".nhdr"):
        raise NnsegError(f"{path}: writing detached-header formats is not supported; use .nii.gz, .mha or .nrrd")
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"{path}: array shape {array.shape} does not match geometry shape {geometry.shape}")
    if path.exists() and not overwrite:
        raise NnsegError(f"{path}: exists already; refusing to overwrite it")
    if is_label:
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{path}: label map has non-integer values")
        array = array.astype(label_dtype_for(array), copy=False)
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(tmp, array, geometry)
        else:
            _write_itk(tmp, array, geometry)
    return path


def _write_nifti(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    image_class = nib.Nifti2Image if geometry.nifti_version == 2 else nib.Nifti1Image
    img = image_class(array.T, geometry.affine)  # a view: nibabel writes it slice by slice, no transposed copy
    sform_code = geometry.sform_code
    qform_code = geometry.qform_code
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = 1  # the source had no NIfTI codes (e.g. .mha): scanner coordinates
    if sform_code:
        img.set_sform(geometry.affine, code=int(sform_code))
    else:
        img.set_sform(None, code=0)
    if qform_code:
        img.set_qform(geometry.affine, code=int(qform_code))
        if geometry.qform_params is not None:  # restore the source's qform verbatim
            header = img.header
            for name, value in zip(_QFORM_FIELDS, geometry.qform_params[:6]):
                header[name] = value
            header["pixdim"][0:4] = geometry.qform_params[6:10]
    else:
        img.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def _write_itk(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    spacing, origin, direction = geometry.to_itk()
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
