"""JsonlTracker: the local record's format, and a record that cannot be written."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from nnseg.tracking import JsonlTracker, TrackingWarning
from tests.tracking.helpers import read_records


def test_record_format(tmp_path: Path) -> None:
    record = JsonlTracker(tmp_path / "deep" / "r.jsonl")
    assert record.start("r", {"fold": 0}) is None and record.run_id is None
    record.log_params({"a": {"b": 1}})
    record.log_metrics({"loss": 0.5}, step=3, timestamp_ms=1_700_000_000_000)
    record.log_artifact(tmp_path / "x.png", "plots")
    record.set_tags({"t": 1})
    record.record_event("fallback", {"error": "down"})
    record.end("KILLED")
    records = read_records(tmp_path / "deep" / "r.jsonl")
    assert [r["kind"] for r in records] == ["start", "params", "metrics", "artifact", "tags", "fallback", "end"]
    assert all(set(r) == {"kind", "step", "payload", "timestamp"} for r in records)
    assert records[0]["payload"] == {"run_name": "r", "tags": {"fold": "0"}, "resume_run_id": None}
    assert records[1]["payload"] == {"a.b": "1"}
    assert (records[2]["step"], records[2]["payload"], records[2]["timestamp"]) == (3, {"loss": 0.5}, 1_700_000_000)
    assert records[3]["payload"] == {"path": str((tmp_path / "x.png").resolve()), "artifact_path": "plots"}
    assert records[-1]["payload"] == {"status": "KILLED"}
    with pytest.raises(ValueError, match="run status"):
        record.end("DONE")  # type: ignore[arg-type]


def test_unwritable_record_warns_once_and_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    record = JsonlTracker(blocker / "r.jsonl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record.start("r")
        record.log_metrics({"m": 1.0}, step=0)
    assert [w.category for w in caught] == [TrackingWarning]
    assert "cannot write the tracking record" in str(caught[0].message)
