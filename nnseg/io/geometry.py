"""Geometry: where the voxels of a volume sit in the world.

Axis order, stated once for all of nnseg: arrays hold the file's voxel axes in
*reversed* order, ``(k, j, i)`` for a 3D volume and ``(c, k, j, i)`` with channels.
That is the order SimpleITK returns and nnU-Net plans in, so per-axis quantities
(spacing, shapes, patch sizes, transposes) compare one to one with nnU-Net's.
World coordinates are RAS+ millimetres (the NIfTI / nibabel convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Converts LPS world coordinates (ITK, DICOM) to RAS (NIfTI) and back: it is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Geometry:
    """Voxel-to-world mapping of a 3D volume.

    Attributes:
        affine: 4x4 matrix mapping voxel indices ``(i, j, k, 1)`` (file order) to RAS+ mm.
        shape: spatial shape in array order ``(k, j, i)``.
        qform_params: the source's raw NIfTI qform fields (quatern_b, quatern_c, quatern_d, qoffset_x,
            qoffset_y, qoffset_z, qfac, pixdim x, y, z) when it had a qform (``qform_code > 0``); kept
            verbatim because converting a qform to a matrix and back is lossy.
        qform_code: NIfTI qform code to restore when writing NIfTI (0 when absent).
        sform_code: NIfTI sform code to restore when writing NIfTI.
        nifti_version: 2 when the source was NIfTI-2 (float64 header fields), so writing keeps precision.
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    qform_params: tuple[float, ...] | None = None
    qform_code: int = 0
    sform_code: int = 1
    nifti_version: int = 1

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("affine is singular: voxel axes do not span 3D space")
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.qform_params is not None:
            if len(self.qform_params) != 10:
                raise ValueError(f"qform_params needs 10 values, got {len(self.qform_params)}")
            object.__setattr__(self, "qform_params", tuple(float(v) for v in self.qform_params))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm, array order ``(k, j, i)``."""
        zooms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(z) for z in zooms[::-1])

    @property
    def origin_ras(self) -> np.ndarray:
        """World position (RAS mm) of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction_ras(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit vectors of voxel axes i, j, k in RAS."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    @classmethod
    def from_itk(
        cls,
        spacing_ijk: tuple[float, ...],
        origin_lps: tuple[float, ...],
        direction_lps: tuple[float, ...],
        shape: tuple[int, ...],
    ) -> Geometry:
        """Build from SimpleITK's (spacing, origin, direction) in LPS, file axis order (i, j, k)."""
        direction = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(np.asarray(spacing_ijk, dtype=np.float64))
        affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin_lps, dtype=np.float64)
        return cls(affine=affine, shape=shape)

    def to_itk(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """Return SimpleITK's ``(spacing_ijk, origin_lps, direction_lps_flat)``."""
        zooms = np.linalg.norm(self.affine[:3, :3], axis=0)
        direction = LPS_TO_RAS @ (self.affine[:3, :3] / zooms)
        origin = LPS_TO_RAS @ self.affine[:3, 3]
        return tuple(zooms.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())

    def with_shape(self, shape: tuple[int, ...]) -> Geometry:
        """Same placement, another array shape (e.g. after dropping channels)."""
        return Geometry(self.affine, shape, self.qform_params, self.qform_code, self.sform_code, self.nifti_version)

    def matches(self, other: Geometry, *, atol_mm: float = 1e-3, rtol: float = 1e-4) -> bool:
        """True when both describe the same voxel grid (shape and affine within tolerance)."""
        return self.shape == other.shape and self.affine_close(other, atol_mm=atol_mm, rtol=rtol)

    def affine_close(self, other: Geometry, *, atol_mm: float = 1e-3, rtol: float = 1e-4) -> bool:
        """True when the affines agree: spacing/direction to ``rtol`` and origin to ``atol_mm``."""
        scale = max(1.0, float(np.abs(self.affine[:3, :3]).max()))
        linear_ok = np.allclose(self.affine[:3, :3], other.affine[:3, :3], rtol=0, atol=rtol * scale)
        origin_ok = np.allclose(self.affine[:3, 3], other.affine[:3, 3], rtol=0, atol=atol_mm)
        return bool(linear_ok and origin_ok)

    def describe(self) -> str:
        """Short human description: spacing and origin."""
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        origin = ", ".join(f"{o:.4g}" for o in self.origin_ras)
        return f"spacing ({spacing}) mm, origin ({origin}) mm RAS"

    def to_dict(self) -> dict:
        """JSON-ready representation."""
        return {
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
            "qform_params": None if self.qform_params is None else list(self.qform_params),
            "qform_code": self.qform_code,
            "sform_code": self.sform_code,
            "nifti_version": self.nifti_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            affine=np.asarray(data["affine"]),
            shape=tuple(data["shape"]),
            qform_params=None if data.get("qform_params") is None else tuple(data["qform_params"]),
            qform_code=int(data.get("qform_code", 0)),
            sform_code=int(data.get("sform_code", 1)),
            nifti_version=int(data.get("nifti_version", 1)),
        )


@dataclass(frozen=True, eq=False)
class Volume:
    """An array in array order plus its geometry.

    Attributes:
        array: ``(k, j, i)`` for one channel, ``(c, k, j, i)`` for a multi-channel file.
        geometry: placement of the spatial axes; ``geometry.shape == array.shape[-3:]``.
    """

    array: np.ndarray
    geometry: Geometry
