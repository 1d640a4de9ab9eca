"""Volume I/O: arrays plus the geometry that places them in the world."""

from nnseg.io.geometry import Geometry
from nnseg.io.images import (
    IMAGE_SUFFIXES,
    Volume,
    label_dtype_for,
    read_geometry,
    read_label_map,
    read_volume,
    split_suffix,
    write_volume,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Geometry",
    "Volume",
    "label_dtype_for",
    "read_geometry",
    "read_label_map",
    "read_volume",
    "split_suffix",
    "write_volume",
]
