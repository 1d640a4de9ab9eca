"""Experiment tracking: one MLflow run per training, and a local JSONL record when MLflow is out of reach.

Training talks to a :class:`Tracker`: :class:`NullTracker` (tracking off) or :class:`MLflowTracker`.

Where runs go:

- default (no URI, no ``MLFLOW_TRACKING_URI``): an embedded store, no server —
  ``sqlite:///<work>/mlflow.db`` with artifacts under ``<work>/mlartifacts``
  (see :func:`default_tracking_uri`);
- ``http://127.0.0.1:5000`` (or any ``http(s)://`` URI): an ``mlflow server``;
- any other URI MLflow understands is passed through unchanged.

Resilience: tracking never stops training. The first failing MLflow call (server down,
database locked, bad credentials...) emits one :class:`TrackingWarning` naming the URI and
the error; from then on every call of that tracker is appended to
``<local_dir>/tracking_fallback.jsonl`` (one JSON object a line: ``kind``, ``step``,
``payload``, ``timestamp``), so nothing is lost. A tracker does not go back to MLflow once it
has fallen back: a run split over two stores would be harder to read than one record to replay.

Failing fast: an ``http(s)`` server is probed at ``<uri>/health`` with a 2 s timeout before the
run starts, so an unreachable server costs about nothing (connection refused) or at most 2 s
(silent host). MLflow's own HTTP client retries with exponential backoff (7 retries, 120 s
timeout by default: minutes per call) and can only be configured through environment
variables, so while it makes a call a tracker sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` — each only when
the user has not set it — and restores the environment afterwards (under a lock, so two
trackers in two threads do not interleave). A server that dies mid-run therefore costs one call
a few seconds, then training goes on against the fallback record.

Parameters: MLflow refuses to change a logged parameter's value. ``log_params`` skips a key
already logged with the same value (so re-logging the config on resume is harmless) and logs a
changed value under ``<key>.changed<N>`` (N = 1, 2, ... — the first suffix that is free or already
holds this value), so the original stays and the change is visible.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import ssl
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from nnseg.errors import NnsegError
from nnseg.schema import to_jsonable

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
FALLBACK_FILE = "tracking_fallback.jsonl"

# MLflow's limits (mlflow.utils.validation), repeated here so that importing nnseg does not import mlflow.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

HEALTH_TIMEOUT_S = 2.0
FAST_FAIL_HTTP_ENV: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_ENV_LOCK = threading.Lock()  # guards the temporary MLFLOW_HTTP_* settings, nothing else
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")


class TrackingError(NnsegError):
    """MLflow could not be used (unreachable server, deleted experiment); trackers turn it into a fallback."""


class TrackingWarning(UserWarning):
    """Tracking degraded (MLflow failed, a value was skipped); training goes on."""


@runtime_checkable
class Tracker(Protocol):
    """What training needs from experiment tracking. ``log_*`` and ``set_tags`` never raise."""

    @property
    def run_id(self) -> str | None:
        """The MLflow run id, or None when there is no MLflow run."""
        ...

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None,
              resume_run_id: str | None = None) -> str | None:
        """Open a run (or reopen ``resume_run_id``); return its id, or None when not tracked in MLflow."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested mappings and dataclasses become dotted keys."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log one value per metric at ``step``."""
        ...

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or folder into the run's artifacts (under ``artifact_path``)."""
        ...

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) run tags."""
        ...

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Close the run with ``status``."""
        ...


class NullTracker:
    """A tracker that records nothing (tracking switched off)."""

    @property
    def run_id(self) -> str | None:
        return None

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None,
              resume_run_id: str | None = None) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def end(self, status: RunStatus = "FINISHED") -> None:
        _check_status(status)


def default_tracking_uri(work_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded store ``sqlite:///<work_dir>/mlflow.db``."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    return "sqlite:///" + (Path(work_dir).resolve() / DB_FILE).as_posix()


def artifact_root(tracking_uri: str) -> Path | None:
    """Where the embedded store keeps artifacts (``mlartifacts`` beside the sqlite file); None for other stores."""
    db = _sqlite_path(tracking_uri)
    return None if db is None else db.resolve().parent / ARTIFACT_DIR


def ui_hint(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """How to look at a run: its URL on a server, or the ``mlflow ui`` command for the embedded store."""
    if _is_http(tracking_uri):
        return _ui_path(tracking_uri.rstrip("/"), experiment_id, run_id)
    command = f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
    root = artifact_root(tracking_uri)
    if root is not None:
        command += f" --default-artifact-root {shlex.quote(str(root))}"
    if experiment_id is not None:
        command += f"  # then open {_ui_path('http://127.0.0.1:5000', experiment_id, run_id)}"
    return command


def flatten_params(params: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings/dataclasses -> ``{"a.b.c": "value"}``, keys made MLflow-safe, values truncated to 6000 chars.

    Lists and tuples become JSON text (``[128, 128, 64]``); an empty mapping becomes ``{}``.

    Raises:
        TypeError: ``params`` is neither a mapping nor a dataclass instance.
    """
    data = to_jsonable(dict(params) if isinstance(params, Mapping) else params)
    if not isinstance(data, dict):
        raise TypeError(f"parameters must be a mapping or a dataclass, got {type(params).__name__}")
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[_mlflow_key(name)] = _text(value)[:MAX_PARAM_VALUE_LENGTH]
    return flat


class MLflowTracker:
    """Tracks one run in MLflow through an explicit ``MlflowClient`` (no global MLflow state).

    Args:
        tracking_uri: ``http(s)://`` server, ``sqlite:///...`` file or any MLflow URI; None means
            ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<local_dir>/mlflow.db`` (callers normally
            pass ``default_tracking_uri(work_dir)``).
        experiment: experiment name, created when missing (embedded store: artifacts under
            ``<db folder>/mlartifacts/<experiment>``).
        local_dir: folder of the fallback record ``tracking_fallback.jsonl`` (created only when needed).
        health_timeout_s: how long the start-up probe of an ``http(s)`` server waits.

    Not thread-safe: use one tracker per thread.
    """

    def __init__(self, tracking_uri: str | None, experiment: str, local_dir: str | os.PathLike, *,
                 health_timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        if not experiment or not experiment.strip():
            raise ValueError("MLflowTracker: the experiment name is empty")
        self.local_dir = Path(local_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri(self.local_dir)
        self.experiment = experiment
        self.health_timeout_s = health_timeout_s
        self.experiment_id: str | None = None
        self.fallback_reason: str | None = None
        self._client: Any = None
        self._run_id: str | None = None
        self._started = False
        self._ended = False
        self._params: dict[str, str] = {}
        self._warned: set[str] = set()

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def fallback_path(self) -> Path:
        """The JSONL record written once MLflow has failed."""
        return self.local_dir / FALLBACK_FILE

    @property
    def fallback_active(self) -> bool:
        """True once MLflow failed and calls go to :attr:`fallback_path`."""
        return self.fallback_reason is not None

    def ui_hint(self) -> str:
        """How to open this run in the MLflow UI (see :func:`ui_hint`)."""
        return ui_hint(self.tracking_uri, self.experiment_id, self._run_id)

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None,
              resume_run_id: str | None = None) -> str | None:
        """Create a run in the experiment, or reopen ``resume_run_id`` so later steps continue it.

        A ``resume_run_id`` unknown to this store (or deleted) gives a warning and a new run tagged
        ``nnseg.resumed_from``. Returns the run id, or None when MLflow failed (fallback record).

        Raises:
            RuntimeError: ``start`` was already called on this tracker.
        """
        if self._started:
            raise RuntimeError(f"MLflowTracker.start called twice (run {self._run_id})")
        self._started = True
        clean_tags = _clean_tags(tags or {})
        try:
            self._probe()
            with _fast_fail_http():
                client = self._get_client()
                run = self._reopen(client, resume_run_id, clean_tags) if resume_run_id else None
                if run is None:
                    if resume_run_id:
                        clean_tags["nnseg.resumed_from"] = resume_run_id
                    experiment_id = self._experiment_id(client)
                    run = client.create_run(experiment_id, tags=_context_tags(clean_tags), run_name=run_name)
            self.experiment_id = run.info.experiment_id
            self._run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001 - any failure means: train on, record locally
            self._fall_back(exc)
            self._record("start", None, {"run_name": run_name, "tags": clean_tags, "resume_run_id": resume_run_id,
                                         "experiment": self.experiment})
        return self._run_id

    def log_params(self, params: Mapping[str, Any] | Any) -> None:
        """Log (nested) parameters in batches of 100; identical re-logs are skipped, changes suffixed."""
        try:
            flat = flatten_params(params)
        except TypeError as exc:
            self._warn_once(f"params:{exc}", f"log_params: {exc}; skipped")
            return
        if not flat:
            return
        if self._use_mlflow():
            try:
                from mlflow.entities import Param

                pending = self._params_to_log(flat)
                items = list(pending.items())
                with _fast_fail_http():
                    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                        batch = items[i:i + MAX_PARAMS_PER_BATCH]
                        self._client.log_batch(self._run_id, params=[Param(k, v) for k, v in batch])
                        self._params.update(batch)
                return
            except Exception as exc:  # noqa: BLE001
                self._fall_back(exc)
        self._record("params", None, flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics at ``step`` in batches of 1000; a value that is not a number is skipped with a warning."""
        values: dict[str, float] = {}
        for key, value in metrics.items():
            try:
                values[_mlflow_key(str(key))] = float(value)
            except (TypeError, ValueError):
                self._warn_once(f"metric:{key}", f"metric {key!r} = {value!r} is not a number; skipped")
        if not values:
            return
        step = int(step)
        if self._use_mlflow():
            try:
                from mlflow.entities import Metric

                timestamp = int(time.time() * 1000)
                items = [Metric(k, v, timestamp, step) for k, v in values.items()]
                with _fast_fail_http():
                    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
                        self._client.log_batch(self._run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])
                return
            except Exception as exc:  # noqa: BLE001
                self._fall_back(exc)
        self._record("metrics", step, values)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file (or a folder's contents); the fallback record keeps the file's path, not a copy."""
        path = Path(path)
        if not path.exists():
            self._warn_once(f"artifact:{path}", f"artifact {path} does not exist; skipped")
            return
        if self._use_mlflow():
            try:
                with _fast_fail_http():
                    if path.is_dir():
                        self._client.log_artifacts(self._run_id, str(path), artifact_path)
                    else:
                        self._client.log_artifact(self._run_id, str(path), artifact_path)
                return
            except Exception as exc:  # noqa: BLE001
                self._fall_back(exc)
        self._record("artifact", None, {"path": str(path.resolve()), "artifact_path": artifact_path})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values truncated to 8000 characters)."""
        clean = _clean_tags(tags)
        if not clean:
            return
        if self._use_mlflow():
            try:
                from mlflow.entities import RunTag

                items = [RunTag(k, v) for k, v in clean.items()]
                with _fast_fail_http():
                    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                        self._client.log_batch(self._run_id, tags=items[i:i + MAX_PARAMS_PER_BATCH])
                return
            except Exception as exc:  # noqa: BLE001
                self._fall_back(exc)
        self._record("tags", None, clean)

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED; a second call does nothing.

        Raises:
            ValueError: ``status`` is not one of those three.
        """
        _check_status(status)
        if not self._started or self._ended:
            return
        self._ended = True
        if self._use_mlflow():
            try:
                with _fast_fail_http():
                    self._client.set_terminated(self._run_id, status=status)
                return
            except Exception as exc:  # noqa: BLE001
                self._fall_back(exc)
        self._record("end", None, {"status": status, "run_id": self._run_id})

    # -- internals -----------------------------------------------------------------------------------

    def _use_mlflow(self) -> bool:
        if not self._started:
            self._warn_once("not-started", f"tracking call before start(); recorded in {self.fallback_path}")
            return False
        return self.fallback_reason is None and self._run_id is not None

    def _get_client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            db = _sqlite_path(self.tracking_uri)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _probe(self) -> None:
        """Raise TrackingError fast when nothing answers at ``<uri>/health`` (http(s) URIs only)."""
        if not _is_http(self.tracking_uri):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.health_timeout_s) as response:  # noqa: S310 - http(s) only
                response.read(64)
        except urllib.error.HTTPError:
            return  # something answers (auth, proxy, path prefix): let MLflow's own calls decide
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                return  # TLS set up differently for MLflow (e.g. MLFLOW_TRACKING_INSECURE_TLS)
            raise TrackingError(f"no MLflow server answers at {url} ({exc.reason})") from None
        except (OSError, ValueError) as exc:
            raise TrackingError(f"no MLflow server answers at {url} ({exc or type(exc).__name__})") from None

    def _experiment_id(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                return client.create_experiment(self.experiment, artifact_location=self._artifact_location())
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another fold created it meanwhile
                    raise
                experiment = client.get_experiment_by_name(self.experiment)
        if experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment {self.experiment!r} (id {experiment.experiment_id}) is deleted; restore it with "
                f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or choose another name")
        return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        root = artifact_root(self.tracking_uri)
        if root is None:
            return None  # a server (or other store) decides where artifacts go
        slug = re.sub(r"[^\w.\-]+", "_", self.experiment).strip("._") or "experiment"
        return (root / slug).as_uri()

    def _reopen(self, client: Any, run_id: str, tags: dict[str, str]) -> Any:
        """The run ``run_id`` set RUNNING again with ``tags`` added, or None (with a warning) when it is gone."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            self._warn_once("resume", f"cannot resume MLflow run {run_id} at {self.tracking_uri}: "
                                      f"{'not found' if run is None else 'deleted'}; starting a new run")
            return None
        client.update_run(run_id, status="RUNNING")
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._params = dict(run.data.params)
        return run

    def _params_to_log(self, flat: dict[str, str]) -> dict[str, str]:
        pending: dict[str, str] = {}
        for key, value in flat.items():
            logged = self._params.get(key)
            if logged == value:
                continue
            if logged is not None:
                n = 1
                while True:
                    suffix = f".changed{n}"
                    candidate = key[:MAX_KEY_LENGTH - len(suffix)] + suffix
                    held = self._params.get(candidate, pending.get(candidate))
                    if held is None or held == value:
                        break
                    n += 1
                if held == value:
                    continue
                key = candidate
            pending[key] = value
        return pending

    def _fall_back(self, exc: BaseException) -> None:
        if self.fallback_reason is not None:
            return
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {text}"[:300]
        self.fallback_reason = reason
        warnings.warn(f"MLflow tracking at {self.tracking_uri} failed ({reason}); training continues, "
                      f"tracking goes to {self.fallback_path}", TrackingWarning, stacklevel=3)
        self._record("fallback", None, {"tracking_uri": self.tracking_uri, "experiment": self.experiment,
                                        "run_id": self._run_id, "error": reason})

    def _record(self, kind: str, step: int | None, payload: Any) -> None:
        line = json.dumps({"kind": kind, "step": step, "payload": to_jsonable(payload), "timestamp": time.time()},
                          default=str)
        try:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            with open(self.fallback_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            self._warn_once("record", f"cannot write the tracking fallback record {self.fallback_path}: {exc}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, TrackingWarning, stacklevel=3)


@contextlib.contextmanager
def _fast_fail_http() -> Iterator[None]:
    """Cap MLflow's HTTP retries/timeout (unless the user set them) for the duration of one call."""
    with _ENV_LOCK:
        added = [name for name in FAST_FAIL_HTTP_ENV if name not in os.environ]
        for name in added:
            os.environ[name] = FAST_FAIL_HTTP_ENV[name]
        try:
            yield
        finally:
            for name in added:
                os.environ.pop(name, None)


def _context_tags(tags: dict[str, str]) -> dict[str, str]:
    """MLflow's usual run context (user, source, git commit) under the caller's tags; tags alone if that fails."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {str(k): _text(v)[:MAX_TAG_VALUE_LENGTH] for k, v in resolve_tags(tags).items()}
    except Exception:  # noqa: BLE001 - context tags are a nicety
        return tags


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {_mlflow_key(str(k)): _text(v)[:MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}


def _mlflow_key(key: str) -> str:
    """A key MLflow accepts: allowed characters only, no empty/'.'/'..' path parts, at most 250 characters."""
    parts = [p for p in _BAD_KEY_CHARS.sub("_", key).split("/") if p not in ("", ".", "..")]
    return ("/".join(parts) or "_")[:MAX_KEY_LENGTH]


def _text(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {list(RUN_STATUSES)}, got {status!r}")


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def _sqlite_path(uri: str) -> Path | None:
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _ui_path(base: str, experiment_id: str | None, run_id: str | None) -> str:
    if experiment_id is None:
        return base
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
