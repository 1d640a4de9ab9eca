"""Where runs go: the default URI, the embedded store's artifact folder, the UI hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnseg.tracking import (
    artifact_root,
    default_tracking_uri,
    mlflow_with_fallback,
    ui_hint,
)


def test_tracking_uri_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri(tmp_path) == "http://tracking.example:5000"
    assert mlflow_with_fallback(None, "x", tmp_path).primary.tracking_uri == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri(tmp_path) == "sqlite:///" + (tmp_path.resolve() / "mlflow.db").as_posix()
    assert mlflow_with_fallback(None, "x", tmp_path).primary.tracking_uri == default_tracking_uri(tmp_path)


def test_artifact_root() -> None:
    assert artifact_root("sqlite:////w/mlflow.db") == Path("/w/mlartifacts")
    assert artifact_root("http://h:5000") is None
    assert artifact_root("sqlite:///:memory:") is None


def test_ui_hint() -> None:
    assert ui_hint("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert ui_hint("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    assert ui_hint("sqlite:////w/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:////w/mlflow.db --default-artifact-root /w/mlartifacts"
    )
    assert ui_hint("sqlite:////w/mlflow.db", "1", "r").endswith(
        "# then open http://127.0.0.1:5000/#/experiments/1/runs/r"
    )
