"""Atomic file writes: write to a hidden temporary name beside the target, then rename over it.

A crash (even ``kill -9``) at any moment leaves either the old file or the new one, never
half a file; a failed write leaves no temporary behind. Temporary names start with ``.``
and contain ``.tmp`` (``remove_stale_temporaries`` in preprocessing relies on that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Args:
        path: the final file (its folder is created).
        suffix: ending the temporary name must keep for writers that pick the format from it (".nii.gz", ".png").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
