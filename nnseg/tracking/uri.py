"""Where runs go: the default tracking URI, the embedded store's artifact folder, how to open the UI."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from nnseg.workspace import Workspace

#: file names of the embedded store, as the work folder spells them (nnseg/workspace.py)
DB_FILE = Workspace(Path(".")).mlflow_store.name
ARTIFACT_DIR = Workspace(Path(".")).mlflow_artifacts.name


def default_tracking_uri(work_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded store ``sqlite:///<work_dir>/mlflow.db``."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    return "sqlite:///" + Workspace(Path(work_dir).resolve()).mlflow_store.as_posix()


def artifact_root(tracking_uri: str) -> Path | None:
    """Where the embedded store keeps artifacts (``mlartifacts`` beside the sqlite file); None for other stores."""
    db = sqlite_path(tracking_uri)
    return None if db is None else Workspace(db.resolve().parent).mlflow_artifacts


def ui_hint(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """How to look at a run: its URL on a server, or the ``mlflow ui`` command for the embedded store."""
    if is_http(tracking_uri):
        return _ui_path(tracking_uri.rstrip("/"), experiment_id, run_id)
    command = f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
    root = artifact_root(tracking_uri)
    if root is not None:
        command += f" --default-artifact-root {shlex.quote(str(root))}"
    if experiment_id is not None:
        command += f"  # then open {_ui_path('http://127.0.0.1:5000', experiment_id, run_id)}"
    return command


def is_http(uri: str) -> bool:
    """True for an ``http(s)://`` URI (an ``mlflow server``)."""
    return uri.lower().startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other URIs and in-memory databases."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _ui_path(base: str, experiment_id: str | None, run_id: str | None) -> str:
    if experiment_id is None:
        return base
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
