"""Helpers for the tracking tests: reading the JSONL record, an MLflow client, a primary that fails on demand."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnseg.tracking import TrackingWarning


def read_records(path: Path) -> list[dict]:
    """The JSONL record as a list of dicts."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def tracking_warnings(caught: list) -> list[str]:
    """The messages of the TrackingWarnings among ``caught``."""
    return [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]


class FakeStore:
    """A primary that records its calls, and raises ConnectionError while ``down`` is True."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.down = False
        self._run_id: str | None = None

    def __str__(self) -> str:
        return "fake store at fake://store"

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _do(self, *call: Any) -> None:
        if self.down:
            raise ConnectionError("connection refused")
        self.calls.append(call)

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None) -> str:
        self._do("start", run_name)
        self._run_id = "run-1"
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._do("params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        self._do("metrics", step, dict(metrics), timestamp_ms)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._do("artifact", Path(path).name, artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._do("tags", dict(tags))

    def end(self, status: str = "FINISHED") -> None:
        self._do("end", status)


class Flaky:
    """Wraps a tracker: every method raises ConnectionError while ``down`` is True (an outage of a real store)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __str__(self) -> str:
        return str(self.inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise ConnectionError("connection reset by peer")
            return attr(*args, **kwargs)

        return call
