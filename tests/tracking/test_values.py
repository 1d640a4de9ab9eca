"""Parameters, metrics and tags made MLflow-safe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from nnseg.tracking import MAX_PARAM_VALUE_LENGTH, flatten_params
from nnseg.tracking.values import (
    changed_params,
    clean_tags,
    metric_values,
    split_metrics,
)


def test_flatten_params() -> None:
    @dataclass(frozen=True)
    class Arch:
        features: tuple[int, ...] = (32, 64)

    flat = flatten_params({"arch": Arch(), "train": {"lr": 0.01, "deep": {"x": None}}, "empty": {}, "p": Path("/a b")})
    assert flat == {"arch.features": "[32, 64]", "train.lr": "0.01", "train.deep.x": "None", "empty": "{}", "p": "/a b"}
    assert flatten_params(flat) == flat  # idempotent: a back-filled call is flattened again unchanged
    assert flatten_params({"v": "y" * 10_000})["v"] == "y" * MAX_PARAM_VALUE_LENGTH
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        flatten_params(42)


def test_changed_params_keep_the_original_and_suffix_the_change() -> None:
    logged = {"lr": "0.01", "lr.changed1": "0.02"}
    assert changed_params(logged, {"lr": "0.01", "epochs": "4"}) == {"epochs": "4"}
    assert changed_params(logged, {"lr": "0.02"}) == {}  # already held by lr.changed1
    assert changed_params(logged, {"lr": "0.03"}) == {"lr.changed2": "0.03"}


def test_metrics_and_tags() -> None:
    values, rejected = split_metrics({"loss": "n/a", "dice": 0.5, "odd:key//./x": 1})
    assert values == {"dice": 0.5, "odd_key/x": 1.0} and rejected == {"loss": "n/a"}
    with pytest.raises(ValueError, match="must be numbers"):
        metric_values({"loss": None})
    assert clean_tags({"fold": 0, "t": "x" * 9000}) == {"fold": "0", "t": "x" * 8000}
