"""MLflowTracker against a real `mlflow server` and the embedded sqlite store; it raises, and fails fast."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nnseg.tracking import (
    MAX_PARAM_VALUE_LENGTH,
    MLflowTracker,
    TrackingError,
    TrackingWarning,
    default_tracking_uri,
    probe_server,
)
from tests.mlflow_server import _free_port
from tests.tracking.helpers import client


def _full_run(uri: str, work: Path, experiment: str) -> MLflowTracker:
    tracker = MLflowTracker(uri, experiment)
    run_id = tracker.start(
        "3d_fullres_fold0", tags={"dataset": "Dataset001_Phantom", "config": "3d_fullres", "fold": 0}
    )
    assert run_id is not None and tracker.run_id == run_id
    tracker.log_params(
        {
            "plans": {"patch_size": [64, 96, 96], "batch_size": 2, "spacing": {"z": 2.5}},
            "optimizer": {"lr": 0.01, "momentum": 0.99},
            "long": "x" * 7000,
        }
    )
    for step in range(3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/dice": 0.3 + 0.1 * step}, step=step)
    artifact = work / "progress.json"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(json.dumps({"epochs": 3}))
    tracker.log_artifact(artifact, artifact_path="plots")
    tracker.set_tags({"best_epoch": 2})
    tracker.end("FINISHED")
    return tracker


def _verify(uri: str, tracker: MLflowTracker) -> None:
    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name(tracker.experiment)
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        "tags.dataset = 'Dataset001_Phantom' and tags.config = '3d_fullres' and tags.fold = '0'",
    )
    assert [r.info.run_id for r in runs] == [tracker.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["best_epoch"] == "2"
    assert run.data.params["plans.patch_size"] == "[64, 96, 96]"
    assert run.data.params["plans.spacing.z"] == "2.5"
    assert run.data.params["optimizer.lr"] == "0.01"
    assert len(run.data.params["long"]) == MAX_PARAM_VALUE_LENGTH
    history = mlflow.get_metric_history(tracker.run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [f.path for f in mlflow.list_artifacts(tracker.run_id, "plots")] == ["plots/progress.json"]


def _resume(uri: str, experiment: str) -> None:
    first = MLflowTracker(uri, experiment)
    run_id = first.start("fold1", tags={"fold": 1})
    first.log_params({"lr": 0.01, "epochs": 4})
    for step in (0, 1):
        first.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
    first.end("KILLED")

    second = MLflowTracker(uri, experiment)
    assert second.start("fold1", tags={"fold": 1, "resumed": True}, resume_run_id=run_id) == run_id
    second.log_params({"lr": 0.01, "epochs": 4})  # identical on resume: skipped, no error
    second.log_params({"lr": 0.02})  # changed: kept under a suffixed key
    for step in (2, 3):
        second.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
    second.end()

    run = client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.01" and run.data.params["lr.changed1"] == "0.02"
    assert run.data.tags["resumed"] == "True"
    history = client(uri).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def test_server_run(mlflow_server: str, tmp_path: Path) -> None:
    tracker = _full_run(mlflow_server, tmp_path, f"server-{uuid.uuid4().hex[:8]}")
    _verify(mlflow_server, tracker)
    assert tracker.ui_hint() == f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}"


def test_server_resume(mlflow_server: str) -> None:
    _resume(mlflow_server, f"resume-{uuid.uuid4().hex[:8]}")


def test_two_trackers_with_different_uris(mlflow_server: str, sqlite_uri: str) -> None:
    a = MLflowTracker(mlflow_server, "coexist")
    b = MLflowTracker(sqlite_uri, "coexist")
    run_a, run_b = a.start("a"), b.start("b")
    a.log_metrics({"m": 1.0}, step=0)
    b.log_metrics({"m": 2.0}, step=0)
    a.end()
    b.end()
    assert [m.value for m in client(mlflow_server).get_metric_history(run_a, "m")] == [1.0]
    assert [m.value for m in client(sqlite_uri).get_metric_history(run_b, "m")] == [2.0]


def test_embedded_sqlite_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    uri = default_tracking_uri(work)
    tracker = _full_run(uri, work, "Dataset001_Phantom")
    _verify(uri, tracker)
    assert (work / "mlflow.db").is_file()
    stored = list((work / "mlartifacts").rglob("progress.json"))
    assert len(stored) == 1 and tracker.run_id in stored[0].parts
    hint = tracker.ui_hint()
    assert hint.startswith(
        f"mlflow ui --backend-store-uri {uri} --default-artifact-root {work.resolve() / 'mlartifacts'}"
    )
    assert f"/runs/{tracker.run_id}" in hint
    _resume(uri, "Dataset001_Phantom")


def test_resume_of_unknown_run_starts_a_new_one(sqlite_uri: str) -> None:
    tracker = MLflowTracker(sqlite_uri, "resume-unknown")
    with pytest.warns(TrackingWarning, match="cannot resume MLflow run 0123456789abcdef"):
        run_id = tracker.start("r", resume_run_id="0123456789abcdef")
    assert run_id is not None and run_id != "0123456789abcdef"
    tracker.end()
    assert client(sqlite_uri).get_run(run_id).data.tags["nnseg.resumed_from"] == "0123456789abcdef"


def test_mlflow_tracker_raises_instead_of_hiding(sqlite_uri: str, tmp_path: Path) -> None:
    tracker = MLflowTracker(sqlite_uri, "strict")
    with pytest.raises(RuntimeError, match="start"):
        tracker.log_metrics({"m": 1.0}, step=0)
    tracker.start("r")
    with pytest.raises(RuntimeError, match="called twice"):
        tracker.start("r")
    with pytest.raises(ValueError, match="must be numbers"):
        tracker.log_metrics({"m": "n/a"}, step=0)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tracker.log_artifact(tmp_path / "missing.png")
    tracker.log_metrics({"m": 1.0}, step=5, timestamp_ms=1_700_000_000_000)
    tracker.end()
    tracker.end()  # a second end does nothing
    [metric] = client(sqlite_uri).get_metric_history(tracker.run_id, "m")
    assert (metric.step, metric.timestamp) == (5, 1_700_000_000_000)


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status code in the server's ``code`` attribute."""

    def do_GET(self) -> None:
        code = self.server.code  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def answering() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_probe_alive_dead_and_failing(answering: http.server.ThreadingHTTPServer) -> None:
    uri = f"http://127.0.0.1:{answering.server_address[1]}"
    for code in (200, 404, 401):  # any API answer below 500: alive, MLflow's own call decides
        answering.code = code  # type: ignore[attr-defined]
        probe_server(uri, "x", 2.0)
    answering.code = 503  # type: ignore[attr-defined]
    with pytest.raises(TrackingError, match="answers HTTP 503"):
        probe_server(uri, "x", 2.0)
    dead = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"no MLflow server answers at {dead}"):
        MLflowTracker(dead, "x").start("r")
    assert time.monotonic() - started < 2
