"""The Tracker protocol, NullTracker, and no environment writes anywhere in nnseg."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nnseg
from nnseg.tracking import (
    FallbackTracker,
    JsonlTracker,
    MLflowTracker,
    NullTracker,
    Tracker,
    mlflow_with_fallback,
)

# os.environ[...] (assignment, del, or a read that should be .get), os.environ.<mutator>(...), os.putenv/unsetenv,
# and the same through a bare `environ` imported from os.
_ENV_WRITE = re.compile(
    r"\benviron\s*\[|\benviron\s*\.\s*(update|setdefault|pop|popitem|clear)\s*\(|\b(putenv|unsetenv)\s*\("
)


def test_null_tracker_and_protocol(tmp_path: Path) -> None:
    null = NullTracker()
    assert null.start("r", {"a": 1}) is None and null.run_id is None
    null.log_params({"a": {"b": 1}})
    null.log_metrics({"m": 1.0}, step=0)
    null.log_metrics({"m": 1.0}, step=0, timestamp_ms=1)
    null.log_artifact(tmp_path / "nothing")
    null.set_tags({"t": 1})
    null.end("KILLED")
    with pytest.raises(ValueError, match="run status"):
        null.end("DONE")  # type: ignore[arg-type]
    for tracker in (
        null,
        MLflowTracker("sqlite:///x.db", "x"),
        JsonlTracker(tmp_path / "r.jsonl"),
        mlflow_with_fallback(None, "x", tmp_path),
    ):
        assert isinstance(tracker, Tracker), type(tracker).__name__
    assert isinstance(mlflow_with_fallback(None, "x", tmp_path), FallbackTracker)


def test_bad_constructor_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="experiment name is empty"):
        MLflowTracker("sqlite:///x.db", " ")
    with pytest.raises(ValueError, match="tracking URI is empty"):
        MLflowTracker("", "x")
    with pytest.raises(ValueError, match="probe_timeout_s"):
        MLflowTracker("http://h", "x", probe_timeout_s=0)
    with pytest.raises(ValueError, match="retry_interval_s"):
        FallbackTracker(NullTracker(), NullTracker(), retry_interval_s=-1)


def test_env_write_pattern() -> None:
    for bad in (
        'os.environ["A"] = "1"',
        "os.environ.update(x)",
        "os.environ.setdefault('A', '1')",
        "os.environ.pop('A', None)",
        "del os.environ['A']",
        "os.putenv('A', '1')",
        "environ.clear()",
    ):
        assert _ENV_WRITE.search(bad), bad
    for fine in ('os.environ.get("A", "")', "dict(os.environ)", "{**os.environ, 'A': '1'}"):
        assert not _ENV_WRITE.search(fine), fine


def test_no_environment_writes_in_nnseg() -> None:
    """nnseg reads the environment (``.get``) where documented, and never changes it: no process-wide side channel."""
    root = Path(nnseg.__file__).parent
    hits = [
        f"{path.relative_to(root.parent)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _ENV_WRITE.search(line)
    ]
    assert not hits, "environment writes (or os.environ[...]; use .get to read):\n" + "\n".join(hits)
