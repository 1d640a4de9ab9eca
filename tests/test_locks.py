"""One writer per folder: a live holder stops the second process (naming it), a dead one's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnseg.errors import NnsegError
from nnseg.locks import FolderLock
from nnseg.workspace import FoldPaths


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_holder_is_named_and_a_dead_ones_lock_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "fold_0" / ".nnseg.lock"
    other = _sleeper()
    try:
        _write_lock_of(path, other.pid)
        with pytest.raises(NnsegError, match=rf"fold 0 is in use by process {other.pid} \(nnseg train\)"):
            FolderLock(path, "fold 0").acquire()
        assert json.loads(path.read_text())["pid"] == other.pid  # left alone
    finally:
        other.kill()
        other.wait()
    lock = FolderLock(path, "fold 0").acquire()  # its process is gone: taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert FolderLock(path, "fold 0").acquire().held is False  # this process holds it: re-entry, no new lock
    lock.release()
    assert not path.exists()


def test_another_hosts_lock_is_trusted_and_a_damaged_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".out.lock"
    path.write_text(json.dumps({"pid": 12345, "host": "elsewhere", "command": "nnseg export"}))
    with pytest.raises(NnsegError, match=f"on host elsewhere .*delete {path}"):
        FolderLock(path, "export folder out").acquire()
    path.write_text("{half a reco")
    with FolderLock(path, "export folder out"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def _write_lock_of(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "nnseg train", "started": "now"}))


def test_two_trainings_of_one_fold_the_second_exits_2_naming_the_first(preprocessed_work: Path) -> None:
    """Two real ``nnseg train`` processes on the same fold: the second stops before touching it."""
    train = [sys.executable, "-m", "nnseg", "train", "--work", str(preprocessed_work), "--fold", "0"]
    options = ["--device", "cpu", "--iters-per-epoch", "2", "--val-iters", "1", "--no-tracking"]
    first = subprocess.Popen([*train, *options, "--epochs", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = FoldPaths(preprocessed_work / "models" / "3d_fullres" / "fold_0").lock
    try:
        deadline = time.monotonic() + 120
        while not lock.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.is_file(), f"the first training never took the lock: {first.stderr and first.stderr.read()}"
        second = subprocess.run([*train, *options, "--epochs", "1"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"is in use by process {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
