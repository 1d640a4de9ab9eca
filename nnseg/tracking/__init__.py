"""Experiment tracking: one MLflow run per training, and a local JSONL record while MLflow is out of reach.

Training talks to a :class:`Tracker`: :class:`NullTracker` (tracking off) or, normally,
:func:`mlflow_with_fallback` — a :class:`FallbackTracker` whose primary is an :class:`MLflowTracker`
and whose backup is a :class:`JsonlTracker` writing ``<fold>/tracking_fallback.jsonl``.

Where runs go (:mod:`nnseg.tracking.uri`):

- default (no URI, no ``MLFLOW_TRACKING_URI``): an embedded store, no server —
  ``sqlite:///<work>/mlflow.db`` with artifacts under ``<work>/mlartifacts`` (:func:`default_tracking_uri`);
- ``http://127.0.0.1:5000`` (or any ``http(s)://`` URI): an ``mlflow server``;
- any other URI MLflow understands is passed through unchanged.

Resilience: tracking never stops training. The first failing MLflow call (server down, database
locked, bad credentials...) emits one :class:`TrackingWarning` naming the URI, the error and the local
record; calls then go to the record, and at most every 30 s (and at the end of the run) the tracker tries
MLflow again and, when it answers, back-fills the missed calls into the same run (:mod:`.fallback`).
Against an ``http(s)`` server each call is preceded by a 2 s, retry-free probe of the server's REST API, so
an unreachable or failing server costs about nothing per call (:mod:`.probe`). Nothing here reads MLflow's
HTTP settings or writes any environment variable.

MLflow 3: experiments nnseg creates or uses are tagged ``mlflow.experimentKind = custom_model_development``
(the UI files them as model development, not GenAI evaluation), and each finished fold becomes an MLflow
*logged model* linked to its run and final metrics, referencing the checkpoint already uploaded as a run
artifact (:meth:`MLflowTracker.log_model`).
"""

from nnseg.tracking.base import (
    RUN_STATUSES,
    NullTracker,
    RunStatus,
    Tracker,
    TrackingError,
    TrackingWarning,
)
from nnseg.tracking.fallback import (
    RETRY_INTERVAL_S,
    EventLog,
    FallbackTracker,
    mlflow_with_fallback,
)
from nnseg.tracking.jsonl import FALLBACK_FILE, JsonlTracker
from nnseg.tracking.mlflow_tracker import (
    EXPERIMENT_KIND_TAG,
    LOGGED_MODEL_TYPE,
    MODEL_DEVELOPMENT,
    MLflowTracker,
)
from nnseg.tracking.probe import PROBE_TIMEOUT_S, probe_server
from nnseg.tracking.uri import (
    ARTIFACT_DIR,
    DB_FILE,
    artifact_root,
    default_tracking_uri,
    ui_hint,
)
from nnseg.tracking.values import (
    MAX_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH,
    flatten_params,
)

__all__ = [
    "ARTIFACT_DIR",
    "DB_FILE",
    "EXPERIMENT_KIND_TAG",
    "FALLBACK_FILE",
    "LOGGED_MODEL_TYPE",
    "MAX_KEY_LENGTH",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "MODEL_DEVELOPMENT",
    "PROBE_TIMEOUT_S",
    "RETRY_INTERVAL_S",
    "RUN_STATUSES",
    "EventLog",
    "FallbackTracker",
    "JsonlTracker",
    "MLflowTracker",
    "NullTracker",
    "RunStatus",
    "Tracker",
    "TrackingError",
    "TrackingWarning",
    "artifact_root",
    "default_tracking_uri",
    "flatten_params",
    "mlflow_with_fallback",
    "probe_server",
    "ui_hint",
]
