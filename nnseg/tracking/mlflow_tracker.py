"""One run in MLflow through an explicit ``MlflowClient``: no global MLflow state, no environment variables.

Failing fast: before each call to an ``http(s)`` server the tracker asks the server's REST API one cheap
question itself (``GET <uri>/api/2.0/mlflow/experiments/get-by-name``) with an explicit timeout and no
retries. Connection refused, a timeout or a 5xx answer raise :class:`TrackingError` at once, so MLflow's
own HTTP client (which retries with exponential backoff for minutes and is configured only through the
``MLFLOW_HTTP_REQUEST_*`` environment variables, which this tracker neither reads nor writes) is only
used while the server answers. A server that fails between the probe and the call still costs MLflow's
configured retries once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnseg.digest import file_sha256
from nnseg.tracking.base import RunStatus, TrackingError, WarnOnce, check_status, now_ms
from nnseg.tracking.probe import PROBE_TIMEOUT_S, probe_server
from nnseg.tracking.uri import artifact_root, is_http, sqlite_path, ui_hint
from nnseg.tracking.values import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH,
    changed_params,
    clean_tags,
    flatten_params,
    metric_values,
    text,
)

#: MLflow 3's UI files an experiment without this tag under GenAI evaluation; nnseg trains models
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
#: ``model_type`` of the logged models nnseg creates (one per trained fold)
LOGGED_MODEL_TYPE = "nnseg-fold"


class MLflowTracker:
    """Tracks one run in MLflow; every failure raises (wrap it in a FallbackTracker to keep training going).

    Args:
        tracking_uri: ``http(s)://`` server, ``sqlite:///...`` file or any MLflow URI (callers normally
            pass ``default_tracking_uri(work_dir)``).
        experiment: experiment name, created when missing (embedded store: artifacts under
            ``<db folder>/mlartifacts/<experiment>``).
        probe_timeout_s: how long the reachability check before each call to an ``http(s)`` server waits.

    Not thread-safe: use one tracker per thread.
    """

    def __init__(self, tracking_uri: str, experiment: str, *, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        if not tracking_uri or not tracking_uri.strip():
            raise ValueError("MLflowTracker: the tracking URI is empty")
        if not experiment or not experiment.strip():
            raise ValueError("MLflowTracker: the experiment name is empty")
        if probe_timeout_s <= 0:
            raise ValueError(f"MLflowTracker: probe_timeout_s must be > 0, got {probe_timeout_s}")
        self.tracking_uri = tracking_uri.strip()
        self.experiment = experiment
        self.probe_timeout_s = probe_timeout_s
        self.experiment_id: str | None = None
        self._client: Any = None
        self._run_id: str | None = None
        self._ended = False
        self._params: dict[str, str] = {}
        self._warn = WarnOnce()

    def __str__(self) -> str:
        return f"MLflow tracking at {self.tracking_uri} (experiment {self.experiment!r})"

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of :attr:`tracking_uri` (created on first use)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            db = sqlite_path(self.tracking_uri)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def ui_hint(self) -> str:
        """How to open this run in the MLflow UI (see :func:`~nnseg.tracking.ui_hint`)."""
        return ui_hint(self.tracking_uri, self.experiment_id, self._run_id)

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None) -> str:
        """Create a run in the experiment, or reopen ``resume_run_id`` so later steps continue it.

        A ``resume_run_id`` unknown to this store (or deleted) gives a warning and a new run tagged
        ``nnseg.resumed_from``. A failed start may be called again.

        Raises:
            RuntimeError: a run is already open on this tracker.
            TrackingError, MlflowException, OSError: MLflow cannot be reached or refused the run.
        """
        if self._run_id is not None:
            raise RuntimeError(f"MLflowTracker.start called twice (run {self._run_id})")
        clean = clean_tags(tags or {})
        self._probe()
        run = self._reopen(resume_run_id, clean) if resume_run_id else None
        if run is None:
            if resume_run_id:
                clean["nnseg.resumed_from"] = resume_run_id
            run = self.client.create_run(self._experiment_id(), tags=_context_tags(clean), run_name=run_name)
        self.experiment_id = run.info.experiment_id
        self._run_id = run.info.run_id
        self._ended = False
        return self._run_id

    def log_params(self, params: Mapping[str, Any] | Any) -> None:
        """Log (nested) parameters in batches of 100; identical re-logs are skipped, changes suffixed.

        MLflow refuses to change a logged parameter: a changed value goes under ``<key>.changed<N>``
        (the first N that is free or already holds this value).
        """
        from mlflow.entities import Param

        pending = changed_params(self._params, flatten_params(params))
        if pending:
            self._log_batch("params", [Param(k, v) for k, v in pending.items()], MAX_PARAMS_PER_BATCH)
            self._params.update(pending)

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp_ms: int | None = None) -> None:
        """Log metrics at ``step`` in batches of 1000.

        Raises:
            ValueError: a value is not a number.
        """
        from mlflow.entities import Metric

        values = metric_values(metrics)
        if values:
            stamp = now_ms() if timestamp_ms is None else int(timestamp_ms)
            items = [Metric(k, v, stamp, int(step)) for k, v in values.items()]
            self._log_batch("metrics", items, MAX_METRICS_PER_BATCH)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values truncated to 8000 characters)."""
        from mlflow.entities import RunTag

        clean = clean_tags(tags)
        if clean:
            self._log_batch("tags", [RunTag(k, v) for k, v in clean.items()], MAX_PARAMS_PER_BATCH)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        run_id = self._ready()
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_model(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        artifact_path: str = "model",
    ) -> str | None:
        """Create an MLflow logged model linked to the run; its id (None when the store has no logged models).

        The weights are not uploaded again: the model's tags name the run artifact
        ``runs:/<run>/<artifact_path>/<file name>`` (uploaded by :meth:`log_artifact`), the local path and
        the file's SHA-256. ``metrics`` are logged on the run at ``step`` and linked to the model. A store
        without the logged-model API (MLflow 2) gives one warning and gets the metrics on the run only.

        Raises:
            FileNotFoundError: ``checkpoint`` does not exist.
            TrackingError, MlflowException, OSError: MLflow cannot be reached or refused a call.
        """
        from mlflow.entities import LoggedModelOutput, Metric
        from mlflow.exceptions import MlflowException

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint {path} does not exist")
        run_id = self._ready()
        values = metric_values(metrics or {})
        stamp = now_ms()
        tags = {
            "nnseg.checkpoint.uri": f"runs:/{run_id}/{artifact_path}/{path.name}",
            "nnseg.checkpoint.path": str(path.resolve()),
            "nnseg.checkpoint.sha256": file_sha256(path),
        }
        try:
            model = self.client.create_logged_model(
                self.experiment_id or self._experiment_id(),
                name=name,
                source_run_id=run_id,
                tags=tags,
                params=flatten_params(params or {}),
                model_type=LOGGED_MODEL_TYPE,
            )
        except MlflowException as exc:
            if exc.error_code not in ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED"):
                raise
            self._warn("logged-model", f"{self}: no logged models in this store ({exc.error_code}); metrics only")
            self.log_metrics(values, step, timestamp_ms=stamp)
            return None
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=int(step))])
        items = [Metric(k, v, stamp, int(step), model_id=model.model_id) for k, v in values.items()]
        self._log_batch("metrics", items, MAX_METRICS_PER_BATCH)
        self.client.finalize_logged_model(model.model_id, "READY")
        return model.model_id

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED; without an open run, or a second time, it does nothing.

        Raises:
            ValueError: ``status`` is not one of those three.
        """
        check_status(status)
        if self._run_id is None or self._ended:
            return
        self.client.set_terminated(self._ready(), status=status)
        self._ended = True

    def ensure_experiment(self) -> str:
        """The experiment's id, created (tagged as model development) when missing."""
        self._probe()
        self.experiment_id = self._experiment_id()
        return self.experiment_id

    # -- internals -----------------------------------------------------------------------------------

    def _ready(self) -> str:
        """The open run's id, once the server has answered the probe."""
        if self._run_id is None:
            raise RuntimeError("MLflowTracker: call start() before logging")
        self._probe()
        return self._run_id

    def _log_batch(self, field: str, items: list[Any], size: int) -> None:
        run_id = self._ready()
        for i in range(0, len(items), size):
            self.client.log_batch(run_id, **{field: items[i : i + size]})

    def _probe(self) -> None:
        if is_http(self.tracking_uri):
            probe_server(self.tracking_uri, self.experiment, self.probe_timeout_s)

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    self.experiment,
                    artifact_location=self._artifact_location(),
                    tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT},
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another fold created it meanwhile
                    raise
                experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment {self.experiment!r} (id {experiment.experiment_id}) is deleted; restore it with "
                f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or choose another name"
            )
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # an experiment made elsewhere: file it as model development
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
        return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        root = artifact_root(self.tracking_uri)
        if root is None:
            return None  # a server (or other store) decides where artifacts go
        slug = re.sub(r"[^\w.\-]+", "_", self.experiment).strip("._") or "experiment"
        return (root / slug).as_uri()

    def _reopen(self, run_id: str, tags: dict[str, str]) -> Any:
        """The run ``run_id`` set RUNNING again with ``tags`` added, or None (with a warning) when it is gone."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            self._warn(
                "resume",
                f"cannot resume MLflow run {run_id} at {self.tracking_uri}: "
                f"{'not found' if run is None else 'deleted'}; starting a new run",
            )
            return None
        self.client.update_run(run_id, status="RUNNING")
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._params = dict(run.data.params)
        return run


def _context_tags(tags: dict[str, str]) -> dict[str, str]:
    """MLflow's usual run context (user, source, git commit) under the caller's tags; tags alone if that fails."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {str(k): text(v)[:MAX_TAG_VALUE_LENGTH] for k, v in resolve_tags(tags).items()}
    except Exception:  # noqa: BLE001 - context tags are a nicety
        return tags
