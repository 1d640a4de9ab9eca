"""What every tracker shares: the :class:`Tracker` protocol, :class:`NullTracker`, run statuses, errors, warnings."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from nnseg.errors import NnsegError

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")


class TrackingError(NnsegError):
    """A tracking store cannot be used (unreachable server, deleted experiment); FallbackTracker falls back."""


class TrackingWarning(UserWarning):
    """Tracking degraded (a store failed, a value was skipped); training goes on."""


@runtime_checkable
class Tracker(Protocol):
    """What training needs from experiment tracking.

    A store (:class:`~nnseg.tracking.MLflowTracker`) raises when it fails; :class:`NullTracker`,
    :class:`~nnseg.tracking.JsonlTracker` and :class:`~nnseg.tracking.FallbackTracker` never raise
    from ``log_*``, ``set_tags`` or ``end`` (only for a programming error: a bad status, ``start`` twice).
    """

    @property
    def run_id(self) -> str | None:
        """The MLflow run id, or None when there is no MLflow run (yet)."""
        ...

    def start(
        self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None
    ) -> str | None:
        """Open a run (or reopen ``resume_run_id``); return its id, or None when it has none."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested mappings and dataclasses become dotted keys."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        """Log one value per metric at ``step``, measured at ``timestamp_ms`` (ms since the epoch; None: now)."""
        ...

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or folder into the run's artifacts (under ``artifact_path``)."""
        ...

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) run tags."""
        ...

    def log_model(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Record a trained model (its checkpoint file, already uploaded by :meth:`log_artifact`, is referenced,
        not uploaded again) linked to the run, with its final ``metrics`` (also logged on the run at ``step``);
        the model's id, or None when there is none (yet)."""
        ...

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Close the run with ``status``."""
        ...


class NullTracker:
    """A tracker that records nothing (tracking switched off)."""

    @property
    def run_id(self) -> str | None:
        return None

    def start(
        self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None
    ) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_model(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        pass

    def end(self, status: RunStatus = "FINISHED") -> None:
        check_status(status)


class WarnOnce:
    """Emits each :class:`TrackingWarning` once per key (per tracker, not per process)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, key: str, message: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            warnings.warn(message, TrackingWarning, stacklevel=4)


def check_status(status: str) -> None:
    """Raise ValueError unless ``status`` is FINISHED, FAILED or KILLED."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {list(RUN_STATUSES)}, got {status!r}")


def now_ms() -> int:
    """The current time in ms since the epoch (MLflow's metric timestamps)."""
    return int(time.time() * 1000)


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:limit]
