"""Tracking that never stops training: a primary store, a backup record, and back-fill when the primary returns."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nnseg.tracking.base import (
    RunStatus,
    Tracker,
    WarnOnce,
    check_status,
    error_summary,
    now_ms,
)
from nnseg.tracking.jsonl import JsonlTracker
from nnseg.tracking.mlflow_tracker import MLflowTracker
from nnseg.tracking.probe import PROBE_TIMEOUT_S
from nnseg.tracking.uri import default_tracking_uri
from nnseg.tracking.values import clean_tags, flatten_params, split_metrics
from nnseg.workspace import FoldPaths

RETRY_INTERVAL_S = 30.0


@runtime_checkable
class EventLog(Protocol):
    """A backup that can also note what happened to the primary (``fallback``, ``recovered``)."""

    def record_event(self, kind: str, payload: Any) -> None:
        """Append one event record."""
        ...


@dataclass(frozen=True)
class _Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to(self, tracker: Tracker) -> None:
        getattr(tracker, self.method)(*self.args, **self.kwargs)


class FallbackTracker:
    """Sends every call to ``primary``; while it fails, to ``backup``, and back-fills ``primary`` when it returns.

    Inputs are checked here, once: a metric that is not a number, a missing artifact file or parameters
    that are not a mapping give a :class:`TrackingWarning` and are skipped. The first failure of the
    primary gives one :class:`TrackingWarning` (naming both trackers and the error; later outages are
    silent), a ``fallback`` event in the backup (when it is an :class:`EventLog`), and from then on each
    call goes to the backup and is kept in memory. At most every ``retry_interval_s`` seconds, and always
    at :meth:`end`, a call first replays the kept calls into the primary, oldest first, with their original
    metric timestamps; when all went through the backup gets a ``recovered`` event and calls go to the
    primary again. A primary that was down at :meth:`start` gets its run created then, so a run that
    started offline still ends up complete in MLflow. An artifact is uploaded once, as the file is at
    back-fill time.

    Args:
        primary: the store that may fail (raises), e.g. :class:`MLflowTracker`.
        backup: a tracker that does not raise, e.g. :class:`JsonlTracker`.
        retry_interval_s: least time between two attempts to reach a failed primary (0: at every call).
        clock: monotonic seconds (tests pass a fake one).

    Not thread-safe: use one tracker per thread.
    """

    def __init__(
        self,
        primary: Tracker,
        backup: Tracker,
        *,
        retry_interval_s: float = RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retry_interval_s < 0:
            raise ValueError(f"FallbackTracker: retry_interval_s must be >= 0, got {retry_interval_s}")
        self.primary = primary
        self.backup = backup
        self.retry_interval_s = retry_interval_s
        self.fallback_reason: str | None = None
        self._clock = clock
        self._pending: deque[_Call] = deque()
        self._retry_at = 0.0
        self._started = False
        self._ended = False
        self._warn = WarnOnce()

    def __str__(self) -> str:
        return f"{self.primary} (backup {self.backup})"

    @property
    def run_id(self) -> str | None:
        """The primary's run id (None until the primary has opened its run)."""
        return self.primary.run_id

    @property
    def fallback_active(self) -> bool:
        """True while the primary is failing and calls go to the backup."""
        return self.fallback_reason is not None

    @property
    def pending_calls(self) -> int:
        """How many calls wait to be back-filled into the primary."""
        return len(self._pending)

    def start(
        self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None
    ) -> str | None:
        """Open the run in the primary; its id, or None while the primary is unreachable.

        Raises:
            RuntimeError: ``start`` was already called on this tracker.
        """
        if self._started:
            raise RuntimeError(f"FallbackTracker.start called twice (run {self.run_id})")
        self._started = True
        self._send(_Call("start", (run_name, clean_tags(tags or {}), resume_run_id)))
        return self.primary.run_id

    def log_params(self, params: Mapping[str, Any] | Any) -> None:
        """Log (nested) parameters; anything that is not a mapping or dataclass is skipped with a warning."""
        try:
            flat = flatten_params(params)
        except TypeError as exc:
            self._warn(f"params:{exc}", f"log_params: {exc}; skipped")
            return
        if flat:
            self._send(_Call("log_params", (flat,)))

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        """Log metrics at ``step``; a value that is not a number is skipped with a warning."""
        values, rejected = split_metrics(metrics)
        for key, value in rejected.items():
            self._warn(f"metric:{key}", f"metric {key!r} = {value!r} is not a number; skipped")
        if values:
            stamp = now_ms() if timestamp_ms is None else int(timestamp_ms)
            self._send(_Call("log_metrics", (values, int(step)), {"timestamp_ms": stamp}))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or folder; a path that does not exist is skipped with a warning."""
        path = Path(path)
        if not path.exists():
            self._warn(f"artifact:{path}", f"artifact {path} does not exist; skipped")
            return
        self._send(_Call("log_artifact", (path.resolve(), artifact_path)))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        clean = clean_tags(tags)
        if clean:
            self._send(_Call("set_tags", (clean,)))

    def log_model(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a trained model linked to the run; a missing checkpoint or bad values are skipped with a warning."""
        path = Path(checkpoint)
        if not path.is_file():
            self._warn(f"model:{path}", f"model checkpoint {path} does not exist; model not recorded")
            return
        values, rejected = split_metrics(metrics or {})
        for key, value in rejected.items():
            self._warn(f"metric:{key}", f"metric {key!r} = {value!r} is not a number; skipped")
        try:
            flat = flatten_params(params or {})
        except TypeError as exc:
            self._warn(f"params:{exc}", f"log_model: {exc}; params skipped")
            flat = {}
        kwargs = {"step": int(step), "metrics": values, "params": flat}
        self._send(_Call("log_model", (name, path.resolve()), kwargs))

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Close the run (after one last back-fill attempt); a second call, or one before ``start``, does nothing.

        Raises:
            ValueError: ``status`` is not FINISHED, FAILED or KILLED.
        """
        check_status(status)
        if not self._started or self._ended:
            return
        self._ended = True
        self._send(_Call("end", (status,)), retry_now=True)

    # -- internals -----------------------------------------------------------------------------------

    def _send(self, call: _Call, retry_now: bool = False) -> None:
        if not self._started:
            self._warn("not-started", f"tracking call before start(); recorded in {self.backup}")
            call.to(self.backup)
            return
        was_down = self.fallback_active
        if call.method == "log_artifact":  # the file is read at upload time: one upload per file is enough
            self._pending = deque(c for c in self._pending if c != call)
        self._pending.append(call)
        too_soon = was_down and not retry_now and self._clock() < self._retry_at
        if too_soon or not self._flush():  # the call stays pending: back-filled later
            call.to(self.backup)
        elif was_down:
            self._event("recovered", {"primary": str(self.primary), "run_id": self.primary.run_id})
            self.fallback_reason = None

    def _flush(self) -> bool:
        """Send the pending calls to the primary, oldest first; False at the first failure (which is kept)."""
        while self._pending:
            call = self._pending[0]
            if call.method == "log_artifact" and not Path(call.args[0]).exists():
                self._warn(
                    f"artifact:{call.args[0]}",
                    f"artifact {call.args[0]} was removed before the tracking server came back; not uploaded",
                )
            else:
                try:
                    call.to(self.primary)
                except Exception as exc:  # noqa: BLE001 - any failure: train on, record locally, retry later
                    self._went_down(exc)
                    return False
            self._pending.popleft()
        return True

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self.retry_interval_s
        if self.fallback_reason is not None:
            return
        self.fallback_reason = reason = error_summary(exc)
        self._warn(
            "fallback",
            f"{self.primary} failed ({reason}); training continues, tracking goes to "
            f"{self.backup} and is sent on when it answers again",
        )
        self._event("fallback", {"primary": str(self.primary), "run_id": self.primary.run_id, "error": reason})

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        if isinstance(self.backup, EventLog):
            self.backup.record_event(kind, payload)


def mlflow_with_fallback(
    tracking_uri: str | None,
    experiment: str,
    local_dir: str | os.PathLike,
    *,
    retry_interval_s: float = RETRY_INTERVAL_S,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> FallbackTracker:
    """MLflow at ``tracking_uri`` (None: :func:`default_tracking_uri` of ``local_dir``), backed by
    ``<local_dir>/tracking_fallback.jsonl`` (created only when needed): what training uses."""
    uri = tracking_uri or default_tracking_uri(local_dir)
    return FallbackTracker(
        MLflowTracker(uri, experiment, probe_timeout_s=probe_timeout_s),
        JsonlTracker(FoldPaths(Path(local_dir)).tracking_fallback),
        retry_interval_s=retry_interval_s,
    )
