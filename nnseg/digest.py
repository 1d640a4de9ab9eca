"""Content hashes of model files: what checkpoints, exports and registered models are checked against."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

#: the key under which a JSON record holds the digest of the rest of its content
CONTENT_KEY = "content_sha256"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(data: Any) -> str:
    """The SHA-256 of JSON data in canonical form (sorted keys, no spaces): equal for equal content, whatever the
    file's layout. A digest, not a signature: it catches edits and damage, not someone who recomputes it."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def content_sha256(data: Mapping[str, Any]) -> str:
    """:func:`json_sha256` of a JSON object without its own :data:`CONTENT_KEY` (the digest it records)."""
    return json_sha256({key: value for key, value in data.items() if key != CONTENT_KEY})


def mismatched_file(
    folder: Path, hashes: Mapping[str, str]
) -> tuple[Path, Literal["missing", "outside", "changed"]] | None:
    """The first file of ``hashes`` (paths relative to ``folder`` -> recorded SHA-256) that is missing, resolves
    anywhere but to itself inside ``folder`` (``..``, a link), or differs from its hash, with why; None when every
    file holds."""
    root = folder.resolve()
    for relative, recorded in hashes.items():
        path = folder / relative
        if not path.is_file():
            return path, "missing"
        if path.resolve() != root / relative:
            return path, "outside"
        if file_sha256(path) != recorded:
            return path, "changed"
    return None
