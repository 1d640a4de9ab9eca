"""Atomic file writes: write to a hidden temporary name beside the target, then rename over it.

A crash (even ``kill -9``) at any moment leaves either the old file or the new one, never
half a file; a failed write leaves no temporary behind. Temporary names are
``.<name>.<pid>.tmp<suffix>``; a ``kill -9`` can leave one behind, and the next run of the
stage that writes into the folder removes it (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP_MARK = ".tmp"
_TEMPORARY = re.compile(rf"^\..+\.(?P<pid>\d+){re.escape(_TMP_MARK)}(\.[A-Za-z0-9.]+)?$")


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Args:
        path: the final file (its folder is created).
        suffix: ending the temporary name must keep for writers that pick the format from it (".nii.gz", ".png").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_MARK}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # e.g. a full disk while writing: name the file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike, *, targets: Collection[str] | None = None) -> int:
    """Delete temporaries of :func:`atomic_path` in ``folder`` whose writing process is gone (and folders built
    aside under the same pattern, e.g. an export's ``.<name>.<pid>.tmp/``); returns how many.

    Only names of this module's pattern are touched, and never one whose process is still running
    (another nnseg process may be writing into the same folder). ``targets`` limits it to temporaries of
    these final file names: a part of a sharded run touches only its own cases' files, since a process
    on another machine sharing the folder would look gone.
    """
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None or process_alive(int(match["pid"])):
            continue
        if targets is not None and path.name[1 : match.start("pid") - 1] not in targets:
            continue
        if path.is_dir() and not path.is_symlink():  # a folder built aside (an export) by a killed process
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (this process included)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
