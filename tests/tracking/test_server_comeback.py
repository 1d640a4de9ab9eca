"""A real `mlflow server` stopped mid-training and started again: the run gets what it missed."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from nnseg.tracking import FALLBACK_FILE, mlflow_with_fallback
from tests.mlflow_server import MlflowServer
from tests.tracking.helpers import client, read_records, tracking_warnings


def test_server_that_comes_back_mid_run_gets_the_missed_calls(tmp_path: Path) -> None:
    fold = tmp_path / "fold_0"
    curves = tmp_path / "curves.png"
    curves.write_bytes(b"epoch 0")
    with MlflowServer(tmp_path / "server") as server:
        tracker = mlflow_with_fallback(server.uri, "comeback", fold, retry_interval_s=0)
        run_id = tracker.start("r", tags={"fold": 0})
        assert run_id is not None
        tracker.log_params({"lr": 0.01})
        tracker.log_metrics({"loss": 1.0}, step=0)

        server.stop()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            down_at = int(time.time() * 1000)
            for step in (1, 2):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
                curves.write_bytes(f"epoch {step}".encode())
                tracker.log_artifact(curves, "plots")
            tracker.log_params({"epochs": 4})
            tracker.set_tags({"best_epoch": 2})
            assert tracker.fallback_active and tracker.pending_calls == 5  # the two curve uploads are one

            server.start()
            tracker.log_metrics({"loss": 0.25}, step=3)
            assert not tracker.fallback_active and tracker.pending_calls == 0
            tracker.end()

        messages = tracking_warnings(caught)
        assert len(messages) == 1, messages
        assert server.uri in messages[0] and str(fold / FALLBACK_FILE) in messages[0]

        mlflow = client(server.uri)
        run = mlflow.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"lr": "0.01", "epochs": "4"}
        assert run.data.tags["best_epoch"] == "2" and run.data.tags["fold"] == "0"
        history = sorted(mlflow.get_metric_history(run_id, "loss"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
        assert all(down_at <= m.timestamp < down_at + 60_000 for m in history[1:3])  # measured, not replayed, time
        assert [f.path for f in mlflow.list_artifacts(run_id, "plots")] == ["plots/curves.png"]
        uploaded = Path(mlflow.download_artifacts(run_id, "plots/curves.png", str(tmp_path / "down")))
        assert uploaded.read_bytes() == b"epoch 2"

    kinds = [r["kind"] for r in read_records(fold / FALLBACK_FILE)]
    assert kinds == ["fallback", "metrics", "artifact", "metrics", "artifact", "params", "tags", "recovered"]
