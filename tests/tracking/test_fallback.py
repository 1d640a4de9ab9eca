"""FallbackTracker: one warning, a local record, training goes on; back-fill when the primary returns."""

from __future__ import annotations

import http.server
import os
import threading
import time
import warnings
from pathlib import Path

import pytest

from nnseg.tracking import (
    FALLBACK_FILE,
    FallbackTracker,
    JsonlTracker,
    MLflowTracker,
    TrackingWarning,
    mlflow_with_fallback,
)
from tests.mlflow_server import _free_port
from tests.tracking.helpers import (
    FakeStore,
    Flaky,
    client,
    read_records,
    tracking_warnings,
)


def _fake(tmp_path: Path, clock: list[float], retry_interval_s: float = 30.0) -> tuple[FallbackTracker, FakeStore]:
    store = FakeStore()
    tracker = FallbackTracker(
        store, JsonlTracker(tmp_path / FALLBACK_FILE), retry_interval_s=retry_interval_s, clock=lambda: clock[0]
    )
    return tracker, store


def test_unreachable_server_falls_back_fast(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    artifact = tmp_path / "curve.json"
    artifact.write_text("{}")
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = mlflow_with_fallback(uri, "offline", tmp_path / "fold_0")
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
    assert uri in message and str(tmp_path / "fold_0" / FALLBACK_FILE) in message and "\n" not in message
    assert tracker.fallback_active and tracker.run_id is None

    records = read_records(tmp_path / "fold_0" / FALLBACK_FILE)
    assert [r["kind"] for r in records] == [
        "fallback",
        "start",
        "params",
        "metrics",
        "metrics",
        "metrics",
        "artifact",
        "tags",
        "end",
    ]
    assert all(set(r) == {"kind", "step", "payload", "timestamp"} for r in records)
    metrics = [r for r in records if r["kind"] == "metrics"]
    assert [r["step"] for r in metrics] == [0, 1, 2]
    assert [r["payload"]["train/loss"] for r in metrics] == pytest.approx([1.0, 0.5, 1 / 3])
    assert records[2]["payload"] == {"optimizer.lr": "0.01"}
    assert records[6]["payload"] == {"path": str(artifact.resolve()), "artifact_path": "plots"}
    assert records[-1]["payload"]["status"] == "FAILED"


class _Failing(http.server.BaseHTTPRequestHandler):
    """Answers /health like a live server, then 503 for every API call (a server dying behind a proxy)."""

    def do_GET(self) -> None:
        self._answer(200 if self.path.rstrip("/").endswith("/health") else 503)

    def do_POST(self) -> None:
        self._answer(503)

    def _answer(self, code: int) -> None:
        body = b"OK" if code == 200 else b"unavailable"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_failing_server_gives_up_at_once_without_touching_the_environment(tmp_path: Path) -> None:
    """MLflow's default retry/backoff would spend minutes on 503s; the probe answers in milliseconds."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    env_before = dict(os.environ)
    try:
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = mlflow_with_fallback(uri, "failing", tmp_path)
            assert tracker.start("r") is None
            tracker.log_metrics({"loss": 1.0}, step=0)
            tracker.end()
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 5, f"giving up took {elapsed:.1f} s"
    messages = tracking_warnings(caught)
    assert len(messages) == 1 and uri in messages[0] and "HTTP 503" in messages[0]
    assert [r["kind"] for r in read_records(tmp_path / FALLBACK_FILE)] == ["fallback", "start", "metrics", "end"]
    assert dict(os.environ) == env_before


def test_failure_mid_run_switches_to_fallback_once(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = mlflow_with_fallback(sqlite_uri, "mid-run", tmp_path)
    run_id = tracker.start("r")
    tracker.log_metrics({"loss": 1.0}, step=0)

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("connection reset by peer")

    assert isinstance(tracker.primary, MLflowTracker)
    monkeypatch.setattr(tracker.primary.client, "log_batch", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.log_metrics({"loss": 0.25}, step=2)
        tracker.end()
    messages = tracking_warnings(caught)
    assert len(messages) == 1 and "ConnectionError: connection reset by peer" in messages[0]
    assert tracker.run_id == run_id
    records = read_records(tmp_path / FALLBACK_FILE)
    assert records[0]["kind"] == "fallback" and records[0]["payload"]["run_id"] == run_id
    assert [(r["step"], r["payload"]["loss"]) for r in records if r["kind"] == "metrics"] == [(1, 0.5), (2, 0.25)]
    assert [m.step for m in client(sqlite_uri).get_metric_history(run_id, "loss")] == [0]


def test_bad_values_are_skipped_not_raised(sqlite_uri: str, tmp_path: Path) -> None:
    tracker = mlflow_with_fallback(sqlite_uri, "bad-values", tmp_path)
    run_id = tracker.start("r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"loss": "n/a", "dice": 0.5, "odd:key//./x": 1.0}, step=0)
        tracker.log_artifact(tmp_path / "missing.png")
        tracker.log_params(42)
    messages = tracking_warnings(caught)
    assert len(messages) == 3 and "'loss' = 'n/a' is not a number" in messages[0], messages
    tracker.end()
    assert not tracker.fallback_active and not (tmp_path / FALLBACK_FILE).exists()
    assert client(sqlite_uri).get_run(run_id).data.metrics == {"dice": 0.5, "odd_key/x": 1.0}


def test_store_down_at_start_gets_the_whole_run_when_it_returns(sqlite_uri: str, tmp_path: Path) -> None:
    primary = Flaky(MLflowTracker(sqlite_uri, "late-start"))
    tracker = FallbackTracker(primary, JsonlTracker(tmp_path / FALLBACK_FILE), retry_interval_s=0)
    primary.down = True
    with pytest.warns(TrackingWarning, match="connection reset by peer"):
        assert tracker.start("r", tags={"fold": 0}) is None
    tracker.log_params({"lr": 0.01})
    tracker.log_metrics({"loss": 1.0}, step=0, timestamp_ms=1_700_000_000_000)
    primary.down = False
    tracker.log_metrics({"loss": 0.5}, step=1)
    assert not tracker.fallback_active and tracker.pending_calls == 0
    run_id = tracker.run_id
    assert run_id is not None
    tracker.end()
    run = client(sqlite_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["fold"] == "0" and run.data.params == {"lr": "0.01"}
    history = client(sqlite_uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    assert history[0].timestamp == 1_700_000_000_000  # back-filled with the time it was measured
    assert [r["kind"] for r in read_records(tmp_path / FALLBACK_FILE)] == [
        "fallback",
        "start",
        "params",
        "metrics",
        "recovered",
    ]


def test_retries_wait_for_the_interval_and_end_forces_one(tmp_path: Path, clock: list[float]) -> None:
    tracker, store = _fake(tmp_path, clock, retry_interval_s=30)
    tracker.start("r")
    store.down = True
    with pytest.warns(TrackingWarning, match="fake store at fake://store failed \\(ConnectionError"):
        tracker.log_metrics({"m": 1.0}, step=0)
    store.down = False
    clock[0] += 10
    tracker.log_metrics({"m": 2.0}, step=1)  # too early to retry: recorded, kept
    assert tracker.fallback_active and tracker.pending_calls == 2 and len(store.calls) == 1
    clock[0] += 25
    tracker.log_metrics({"m": 3.0}, step=2)  # 35 s after the failure: back-filled, then sent
    assert not tracker.fallback_active and [c[1] for c in store.calls[1:]] == [0, 1, 2]
    store.down = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"m": 4.0}, step=3)  # second outage: no second warning
        store.down = False
        tracker.end()  # within the interval, but end always tries once more
    assert tracking_warnings(caught) == []
    assert store.calls[-2:] == [("metrics", 3, {"m": 4.0}, store.calls[-2][3]), ("end", "FINISHED")]
    kinds = [r["kind"] for r in read_records(tmp_path / FALLBACK_FILE)]
    assert kinds == ["fallback", "metrics", "metrics", "recovered", "fallback", "metrics", "recovered"]


def test_backfill_uploads_each_artifact_once_and_skips_removed_ones(tmp_path: Path, clock: list[float]) -> None:
    tracker, store = _fake(tmp_path, clock, retry_interval_s=0)
    curves, gone = tmp_path / "curves.png", tmp_path / "gone.png"
    curves.write_bytes(b"1")
    gone.write_bytes(b"1")
    tracker.start("r")
    store.down = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            tracker.log_artifact(curves)
        tracker.log_artifact(gone, "plots")
    assert len(tracking_warnings(caught)) == 1 and tracker.pending_calls == 2
    gone.unlink()
    store.down = False
    with pytest.warns(TrackingWarning, match="gone.png was removed"):
        tracker.set_tags({"t": 1})
    assert store.calls == [("start", "r"), ("artifact", "curves.png", None), ("tags", {"t": "1"})]


def test_calls_before_start_and_start_twice(tmp_path: Path, clock: list[float]) -> None:
    tracker, store = _fake(tmp_path, clock)
    with pytest.warns(TrackingWarning, match="before start"):
        tracker.log_metrics({"m": 1.0}, step=0)
    tracker.end()  # before start: nothing to close
    assert store.calls == [] and [r["kind"] for r in read_records(tmp_path / FALLBACK_FILE)] == ["metrics"]
    assert tracker.start("r") == "run-1"
    with pytest.raises(RuntimeError, match="called twice"):
        tracker.start("r")
    with pytest.raises(ValueError, match="run status"):
        tracker.end("DONE")  # type: ignore[arg-type]
