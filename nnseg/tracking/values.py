"""Parameters, metrics and tags made MLflow-safe: dotted keys, allowed characters, MLflow's length limits."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from nnseg.schema import flatten_json, to_jsonable

# MLflow's limits (mlflow.utils.validation), repeated here so that importing nnseg does not import mlflow.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")


def flatten_params(params: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings/dataclasses -> ``{"a.b.c": "value"}``, keys made MLflow-safe, values truncated to 6000 chars.

    Lists and tuples become JSON text (``[128, 128, 64]``); an empty mapping becomes ``{}``. Flattening an
    already flat result gives it back unchanged.

    Raises:
        TypeError: ``params`` is neither a mapping nor a dataclass instance.
    """
    data = to_jsonable(dict(params) if isinstance(params, Mapping) else params)
    if not isinstance(data, dict):
        raise TypeError(f"parameters must be a mapping or a dataclass, got {type(params).__name__}")
    return {
        mlflow_key(name): text(value)[:MAX_PARAM_VALUE_LENGTH] for name, value in flatten_json(data, prefix).items()
    }


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """``(numbers under MLflow-safe keys, the values that are not numbers under their original keys)``."""
    values: dict[str, float] = {}
    rejected: dict[str, Any] = {}
    for key, value in metrics.items():
        try:
            values[mlflow_key(str(key))] = float(value)
        except (TypeError, ValueError):
            rejected[str(key)] = value
    return values, rejected


def metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as floats under MLflow-safe keys.

    Raises:
        ValueError: a value is not a number.
    """
    values, rejected = split_metrics(metrics)
    if rejected:
        raise ValueError(f"metric values must be numbers, got {rejected!r}")
    return values


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags under MLflow-safe keys, values as text truncated to 8000 characters."""
    return {mlflow_key(str(k)): text(v)[:MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}


def mlflow_key(key: str) -> str:
    """A key MLflow accepts: allowed characters only, no empty/'.'/'..' path parts, at most 250 characters."""
    parts = [p for p in _BAD_KEY_CHARS.sub("_", key).split("/") if p not in ("", ".", "..")]
    return ("/".join(parts) or "_")[:MAX_KEY_LENGTH]


def text(value: Any) -> str:
    """A parameter or tag value as MLflow stores it: strings as they are, lists and mappings as JSON."""
    value = to_jsonable(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def changed_params(logged: Mapping[str, str], flat: Mapping[str, str]) -> dict[str, str]:
    """The part of ``flat`` still to log, given the parameters already ``logged`` in the run.

    MLflow refuses to change a logged value: a key logged with the same value is skipped, a changed
    value goes under ``<key>.changed<N>`` (N = 1, 2, ...: the first suffix that is free or already
    holds this value), so the original stays and the change is visible.
    """
    pending: dict[str, str] = {}
    for key, value in flat.items():
        held = logged.get(key)
        n = 0
        while held is not None and held != value:
            n += 1
            suffix = f".changed{n}"
            candidate = key[: MAX_KEY_LENGTH - len(suffix)] + suffix
            held = logged.get(candidate, pending.get(candidate))
        if held is None:
            pending[key if n == 0 else candidate] = value
    return pending
