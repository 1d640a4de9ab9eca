"""Tracking against a real `mlflow server`, the embedded sqlite store, and servers that are down or failing."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from tests.mlflow_server import _free_port

from nnseg.tracking import (
    FALLBACK_FILE,
    MAX_PARAM_VALUE_LENGTH,
    MLflowTracker,
    NullTracker,
    Tracker,
    TrackingWarning,
    default_tracking_uri,
    flatten_params,
    ui_hint,
)

def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _full_run(uri: str, work: Path, experiment: str) -> MLflowTracker:
    tracker = MLflowTracker(uri, experiment, work / "fold_0")
    run_id = tracker.start("3d_fullres_fold0", tags={"dataset": "Dataset001_Phantom", "config": "3d_fullres",
                                                     "fold": 0})
    assert run_id is not None and tracker.run_id == run_id
    tracker.log_params({"plans": {"patch_size": [64, 96, 96], "batch_size": 2, "spacing": {"z": 2.5}},
                        "optimizer": {"lr": 0.01, "momentum": 0.99}, "long": "x" * 7000})
    for step in range(3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/dice": 0.3 + 0.1 * step}, step=step)
    artifact = work / "progress.json"
    artifact.write_text(json.dumps({"epochs": 3}))
    tracker.log_artifact(artifact, artifact_path="plots")
    tracker.set_tags({"best_epoch": 2})
    tracker.end("FINISHED")
    assert not tracker.fallback_active
    assert not (work / "fold_0" / FALLBACK_FILE).exists()
    return tracker


def _verify(uri: str, tracker: MLflowTracker) -> None:
    client = _client(uri)
    experiment = client.get_experiment_by_name(tracker.experiment)
    runs = client.search_runs([experiment.experiment_id],
                              "tags.dataset = 'Dataset001_Phantom' and tags.config = '3d_fullres' and tags.fold = '0'")
    assert [r.info.run_id for r in runs] == [tracker.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["best_epoch"] == "2"
    assert run.data.params["plans.patch_size"] == "[64, 96, 96]"
    assert run.data.params["plans.spacing.z"] == "2.5"
    assert run.data.params["optimizer.lr"] == "0.01"
    assert len(run.data.params["long"]) == MAX_PARAM_VALUE_LENGTH
    history = client.get_metric_history(tracker.run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [f.path for f in client.list_artifacts(tracker.run_id, "plots")] == ["plots/progress.json"]


def _resume(uri: str, work: Path, experiment: str) -> None:
    first = MLflowTracker(uri, experiment, work)
    run_id = first.start("fold1", tags={"fold": 1})
    first.log_params({"lr": 0.01, "epochs": 4})
    for step in (0, 1):
        first.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
    first.end("KILLED")

    second = MLflowTracker(uri, experiment, work)
    assert second.start("fold1", tags={"fold": 1, "resumed": True}, resume_run_id=run_id) == run_id
    second.log_params({"lr": 0.01, "epochs": 4})  # identical on resume: skipped, no error
    second.log_params({"lr": 0.02})  # changed: kept under a suffixed key
    for step in (2, 3):
        second.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
    second.end()
    assert not second.fallback_active

    run = _client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.01" and run.data.params["lr.changed1"] == "0.02"
    assert run.data.tags["resumed"] == "True"
    history = _client(uri).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def test_server_run(mlflow_server: str, tmp_path: Path) -> None:
    tracker = _full_run(mlflow_server, tmp_path, f"server-{uuid.uuid4().hex[:8]}")
    _verify(mlflow_server, tracker)
    assert tracker.ui_hint() == f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}"


def test_server_resume(mlflow_server: str, tmp_path: Path) -> None:
    _resume(mlflow_server, tmp_path, f"resume-{uuid.uuid4().hex[:8]}")


def test_two_trackers_with_different_uris(mlflow_server: str, tmp_path: Path) -> None:
    local_uri = default_tracking_uri(tmp_path)
    a = MLflowTracker(mlflow_server, "coexist", tmp_path / "a")
    b = MLflowTracker(local_uri, "coexist", tmp_path / "b")
    run_a, run_b = a.start("a"), b.start("b")
    a.log_metrics({"m": 1.0}, step=0)
    b.log_metrics({"m": 2.0}, step=0)
    a.end()
    b.end()
    assert [m.value for m in _client(mlflow_server).get_metric_history(run_a, "m")] == [1.0]
    assert [m.value for m in _client(local_uri).get_metric_history(run_b, "m")] == [2.0]


def test_embedded_sqlite_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    uri = default_tracking_uri(work)
    assert uri == "sqlite:///" + (work.resolve() / "mlflow.db").as_posix()
    tracker = _full_run(uri, work, "Dataset001_Phantom")
    _verify(uri, tracker)
    assert (work / "mlflow.db").is_file()
    stored = list((work / "mlartifacts").rglob("progress.json"))
    assert len(stored) == 1 and tracker.run_id in stored[0].parts
    hint = tracker.ui_hint()
    assert hint.startswith(f"mlflow ui --backend-store-uri {uri} --default-artifact-root {work.resolve() / 'mlartifacts'}")
    assert f"/runs/{tracker.run_id}" in hint
    _resume(uri, work, "Dataset001_Phantom")


def test_tracking_uri_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri(tmp_path) == "http://tracking.example:5000"
    assert MLflowTracker(None, "x", tmp_path).tracking_uri == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert MLflowTracker(None, "x", tmp_path).tracking_uri == default_tracking_uri(tmp_path)


def test_resume_of_unknown_run_starts_a_new_one(tmp_path: Path) -> None:
    tracker = MLflowTracker(default_tracking_uri(tmp_path), "resume-unknown", tmp_path)
    with pytest.warns(TrackingWarning, match="cannot resume MLflow run 0123456789abcdef"):
        run_id = tracker.start("r", resume_run_id="0123456789abcdef")
    assert run_id is not None and run_id != "0123456789abcdef"
    tracker.end()
    assert _client(tracker.tracking_uri).get_run(run_id).data.tags["nnseg.resumed_from"] == "0123456789abcdef"


def _read_fallback(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unreachable_server_falls_back_fast(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    artifact = tmp_path / "curve.json"
    artifact.write_text("{}")
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = MLflowTracker(uri, "offline", tmp_path / "fold_0")
        assert tracker.start("offline", tags={"fold": 0}) is None
        tracker.log_params({"optimizer": {"lr": 0.01}})
        for step in range(3):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        tracker.log_artifact(artifact, "plots")
        tracker.set_tags({"best_epoch": 2})
        tracker.end("FAILED")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"falling back took {elapsed:.1f} s"
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, TrackingWarning)
    message = str(caught[0].message)
    assert uri in message and "\n" not in message
    assert tracker.fallback_active and tracker.run_id is None

    records = _read_fallback(tmp_path / "fold_0" / FALLBACK_FILE)
    assert [r["kind"] for r in records] == ["fallback", "start", "params", "metrics", "metrics", "metrics",
                                             "artifact", "tags", "end"]
    assert all(set(r) == {"kind", "step", "payload", "timestamp"} for r in records)
    metrics = [r for r in records if r["kind"] == "metrics"]
    assert [r["step"] for r in metrics] == [0, 1, 2]
    assert [r["payload"]["train/loss"] for r in metrics] == pytest.approx([1.0, 0.5, 1 / 3])
    assert records[2]["payload"] == {"optimizer.lr": "0.01"}
    assert records[6]["payload"] == {"path": str(artifact.resolve()), "artifact_path": "plots"}
    assert records[-1]["payload"]["status"] == "FAILED"


class _Failing(http.server.BaseHTTPRequestHandler):
    """Answers /health like a live server, then 503 for every API call (a server dying behind a proxy)."""

    def do_GET(self) -> None:  # noqa: N802
        self._answer(200 if self.path.rstrip("/").endswith("/health") else 503)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(503)

    def _answer(self, code: int) -> None:
        body = b"OK" if code == 200 else b"unavailable"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_failing_server_gives_up_after_few_retries(tmp_path: Path) -> None:
    """MLflow's default retry/backoff would spend minutes on 503s; the tracker caps it to seconds."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    env_before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")}
    try:
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = MLflowTracker(uri, "failing", tmp_path)
            assert tracker.start("r") is None
            tracker.log_metrics({"loss": 1.0}, step=0)
            tracker.end()
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 20, f"giving up took {elapsed:.1f} s"
    tracking = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking) == 1 and uri in str(tracking[0].message)
    assert [r["kind"] for r in _read_fallback(tmp_path / FALLBACK_FILE)] == ["fallback", "start", "metrics", "end"]
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")} == env_before


def test_failure_mid_run_switches_to_fallback_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = default_tracking_uri(tmp_path)
    tracker = MLflowTracker(uri, "mid-run", tmp_path)
    run_id = tracker.start("r")
    tracker.log_metrics({"loss": 1.0}, step=0)

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(tracker._client, "log_batch", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.log_metrics({"loss": 0.25}, step=2)
        tracker.end()
    tracking = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking) == 1 and "ConnectionError: connection reset by peer" in str(tracking[0].message)
    assert tracker.run_id == run_id
    records = _read_fallback(tmp_path / FALLBACK_FILE)
    assert records[0]["kind"] == "fallback" and records[0]["payload"]["run_id"] == run_id
    assert [(r["step"], r["payload"]["loss"]) for r in records if r["kind"] == "metrics"] == [(1, 0.5), (2, 0.25)]
    assert [m.step for m in _client(uri).get_metric_history(run_id, "loss")] == [0]


def test_bad_values_are_skipped_not_raised(tmp_path: Path) -> None:
    tracker = MLflowTracker(default_tracking_uri(tmp_path), "bad-values", tmp_path)
    run_id = tracker.start("r")
    with pytest.warns(TrackingWarning) as caught:
        tracker.log_metrics({"loss": "n/a", "dice": 0.5, "odd:key//./x": 1.0}, step=0)
        tracker.log_artifact(tmp_path / "missing.png")
        tracker.log_params(42)
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 3
    tracker.end()
    assert not tracker.fallback_active
    metrics = _client(tracker.tracking_uri).get_run(run_id).data.metrics
    assert metrics == {"dice": 0.5, "odd_key/x": 1.0}


def test_flatten_params() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Arch:
        features: tuple[int, ...] = (32, 64)

    flat = flatten_params({"arch": Arch(), "train": {"lr": 0.01, "deep": {"x": None}}, "empty": {}, "p": Path("/a b")})
    assert flat == {"arch.features": "[32, 64]", "train.lr": "0.01", "train.deep.x": "None", "empty": "{}",
                    "p": "/a b"}
    assert flatten_params({"v": "y" * 10_000})["v"] == "y" * MAX_PARAM_VALUE_LENGTH


def test_ui_hint() -> None:
    assert ui_hint("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert ui_hint("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    assert ui_hint("sqlite:////w/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:////w/mlflow.db --default-artifact-root /w/mlartifacts")


def test_null_tracker_and_protocol(tmp_path: Path) -> None:
    null = NullTracker()
    assert null.start("r", {"a": 1}) is None and null.run_id is None
    null.log_params({"a": {"b": 1}})
    null.log_metrics({"m": 1.0}, step=0)
    null.log_artifact(tmp_path / "nothing")
    null.set_tags({"t": 1})
    null.end("KILLED")
    with pytest.raises(ValueError, match="run status"):
        null.end("DONE")  # type: ignore[arg-type]
    assert isinstance(null, Tracker)
    assert isinstance(MLflowTracker(None, "x", tmp_path), Tracker)
