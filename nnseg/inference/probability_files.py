"""Probability files beside label maps: ``<case>.npz`` holding ``probabilities`` (float16, one channel per
output), ``labels`` (the output names) and ``regions_class_order``; what ``nnseg ensemble`` averages."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from nnseg.atomic import atomic_path
from nnseg.io import split_suffix
from nnseg.labels import LabelScheme


def probabilities_path(label_map: str | os.PathLike) -> Path:
    """Where the probabilities of a label map go: ``<case>.npz`` beside ``<case><ending>``."""
    label_map = Path(label_map)
    if label_map.suffix.lower() == ".dcm":  # a DICOM-SEG
        return label_map.with_suffix(".npz")
    return label_map.with_name(f"{split_suffix(label_map)[0]}.npz")


def save_probabilities(output: Path, probabilities: np.ndarray, scheme: LabelScheme) -> None:
    """``probabilities`` (float16) with the output names and the regions' paint order, beside the label map
    ``output``, atomically."""
    with atomic_path(probabilities_path(output), suffix=".npz") as tmp:
        save_npz(
            tmp,
            probabilities=probabilities.astype(np.float16),
            labels=np.array(scheme.output_names),
            regions_class_order=np.array(scheme.regions_class_order or (), dtype=np.int64),
        )


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps: the same arrays give the same bytes (reruns, shards)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
