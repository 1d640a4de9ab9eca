"""A real `mlflow server` on 127.0.0.1, started by the tests that need one (session fixture in conftest)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_command() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1:``port`` (sqlite backend and proxied artifacts under ``root``).

    It can be stopped and started again on the same port and store, like a server that goes down and
    comes back; :meth:`start` raises ``pytest.fail`` when it does not answer ``/health`` in time.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = _free_port() if port is None else port
        self.uri = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start the server (if it is not running) and wait until it answers; its URI."""
        if self._proc is not None and self._proc.poll() is None:
            return self.uri
        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root / "server.log"
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    *_mlflow_command(),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--backend-store-uri",
                    f"sqlite:///{(self.root / 'mlflow.db').as_posix()}",
                    "--artifacts-destination",
                    str(self.root / "artifacts"),
                    "--serve-artifacts",
                    "--workers",
                    "1",
                ],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )  # child only: starts faster
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self._proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return self.uri
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"mlflow server did not answer within {SERVER_START_TIMEOUT_S:.0f} s:\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server and everything it started (it may be started again)."""
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc = None

    def __enter__(self) -> MlflowServer:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a free port (sqlite backend, proxied artifacts), shared by the session."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server.uri


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
