"""Reading a case's channels: one stack, one grid, errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnseg.dataset.reading import read_channels
from nnseg.errors import ImageReadError
from nnseg.io import Geometry, write_volume


def test_channels_stack_and_mismatches_are_refused(tmp_path: Path) -> None:
    geometry = Geometry(affine=np.diag([1.0, 1.0, 2.0, 1.0]), shape=(4, 5, 6))
    a = write_volume(tmp_path / "a_0000.nii.gz", np.zeros((4, 5, 6), np.int16), geometry)
    b = write_volume(tmp_path / "a_0001.nii.gz", np.ones((4, 5, 6), np.float32), geometry)
    volume = read_channels([a, b])
    assert volume.array.shape == (2, 4, 5, 6) and volume.array.dtype == np.float32
    shifted = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted[0, 3] = 5.0
    c = write_volume(tmp_path / "c.nii.gz", np.zeros((4, 5, 6), np.float32), Geometry(affine=shifted, shape=(4, 5, 6)))
    with pytest.raises(ImageReadError, match="c.nii.gz: geometry differs from .*a_0000.nii.gz"):
        read_channels([a, c])
    d = write_volume(
        tmp_path / "d.nii.gz", np.zeros((4, 5, 7), np.float32), Geometry(affine=np.eye(4), shape=(4, 5, 7))
    )
    with pytest.raises(ImageReadError, match="d.nii.gz: shape"):
        read_channels([a, d])
