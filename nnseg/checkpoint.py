"""Self-describing checkpoints: weights + plan + configuration + training state, written atomically.

A checkpoint alone is enough to rebuild the network and preprocess new images
(``Predictor.from_checkpoints``); it never needs the trainer or the work folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError
from nnseg.planning.plan import Plan
from nnseg.schema import load_dataclass, to_jsonable

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` via a temp file and rename: a crash leaves the previous file intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a clear NnsegError when the file is missing, truncated or not ours."""
    path = Path(path)
    if not path.is_file():
        raise NnsegError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for damaged files
        raise NnsegError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise NnsegError(f"{path}: not an nnseg checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'})")
    return payload


def plan_payload(plan: Plan) -> dict:
    return to_jsonable(plan)


def plan_from_payload(payload: dict[str, Any]) -> Plan:
    plan = load_dataclass(Plan, payload["plan"])
    plan.validate()
    return plan
