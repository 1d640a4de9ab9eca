"""Fixtures of the tracking tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded MLflow store shared by the session (creating one costs seconds): use your own experiment name."""
    from nnseg.tracking import default_tracking_uri

    return default_tracking_uri(tmp_path_factory.mktemp("shared_store"))


@pytest.fixture()
def clock() -> list[float]:
    """A fake monotonic clock: ``clock[0]`` is the time; pass ``lambda: clock[0]`` to a FallbackTracker."""
    return [1000.0]
