"""A local record of a run: one JSON object a line in a file, for when MLflow is out of reach."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnseg.schema import to_jsonable
from nnseg.tracking.base import RunStatus, WarnOnce, check_status
from nnseg.tracking.values import clean_tags, flatten_params, metric_values
from nnseg.workspace import FoldPaths

FALLBACK_FILE = FoldPaths(Path(".")).tracking_fallback.name  # spelled in nnseg/workspace.py


class JsonlTracker:
    """Appends every call to ``path`` as ``{"kind", "step", "payload", "timestamp"}`` (one JSON object a line).

    ``kind`` is ``start``, ``params``, ``metrics`` (``step`` set, ``timestamp`` the measurement time),
    ``artifact`` (the file's absolute path, not a copy), ``tags``, ``model`` (a trained model), ``end``, or an
    event written by :meth:`record_event` (``fallback``, ``recovered``). The folder is created on the first
    write. A write that fails (read-only folder, full disk) gives one :class:`TrackingWarning` and is dropped: this
    tracker never raises for I/O. It has no run id.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._warn = WarnOnce()

    def __str__(self) -> str:
        return str(self.path)

    @property
    def run_id(self) -> str | None:
        return None

    def start(
        self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None
    ) -> str | None:
        self.record_event(
            "start", {"run_name": run_name, "tags": clean_tags(tags or {}), "resume_run_id": resume_run_id}
        )
        return None

    def log_params(self, params: Mapping[str, Any] | Any) -> None:
        """Record flattened parameters (see :func:`~nnseg.tracking.flatten_params`, which may raise TypeError)."""
        self.record_event("params", flatten_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        """Record metrics at ``step`` (ValueError when a value is not a number)."""
        self.record_event(
            "metrics",
            metric_values(metrics),
            step=int(step),
            timestamp=None if timestamp_ms is None else timestamp_ms / 1000,
        )

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.record_event("artifact", {"path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.record_event("tags", clean_tags(tags))

    def log_model(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a trained model (``kind`` ``model``: name, checkpoint path, final metrics, params)."""
        self.record_event(
            "model",
            {
                "name": name,
                "checkpoint": str(Path(checkpoint).resolve()),
                "metrics": metric_values(metrics or {}),
                "params": flatten_params(params or {}),
            },
            step=int(step),
        )

    def end(self, status: RunStatus = "FINISHED") -> None:
        check_status(status)
        self.record_event("end", {"status": status})

    def record_event(self, kind: str, payload: Any, *, step: int | None = None, timestamp: float | None = None) -> None:
        """Append one record; ``timestamp`` in seconds since the epoch (None: now)."""
        line = json.dumps(
            {
                "kind": kind,
                "step": step,
                "payload": to_jsonable(payload),
                "timestamp": time.time() if timestamp is None else timestamp,
            },
            default=str,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            self._warn("write", f"cannot write the tracking record {self.path}: {exc}")
