"""One writer per folder: a lock file that names the process holding it.

``nnseg train`` holds its fold folder's lock for the whole run and ``nnseg export`` its output's, so a second
process on the same folder stops at once with a message naming the first (its PID, host and command) instead of
writing beside it. The lock is created complete (written aside, then hard-linked into place, which fails when a
lock exists), so a reader never sees half a record. A lock whose process is gone (``kill -9``, a crash) is taken
over; a lock from another host (a shared folder) is trusted, since its process cannot be checked from here, and
the message says which file to delete once that process is known to be gone. The same process may take a lock it
holds again (its own earlier stage, or a second trainer object in one Python session).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nnseg.atomic import process_alive
from nnseg.errors import NnsegError


class FolderLock:
    """The lock file ``path`` guarding ``what`` (e.g. "fold folder models/3d_fullres/fold_0")."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.held = False

    def acquire(self) -> FolderLock:
        """Take the lock, or raise NnsegError naming the live process that holds it."""
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed by another process at the same moment: try again
            holder = self._place(record)
            if holder is None:
                self.held = True
                return self
            if holder.get("pid") == os.getpid() and holder.get("host") == record["host"]:
                return self  # this process holds it already
            if not holder or (holder.get("host") == record["host"] and not process_alive(_pid(holder))):
                self.path.unlink(missing_ok=True)  # its process is gone (or the file is damaged): take it over
                continue
            raise NnsegError(self._busy_message(holder, record["host"]))
        raise NnsegError(f"{self.path}: could not take the lock of {self.what}; try again")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held and _read(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _place(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Create the lock holding ``record``; None when created, else the record of the lock in place."""
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        aside.write_text(json.dumps(record))
        try:
            os.link(aside, self.path)
            return None
        except FileExistsError:
            return _read(self.path)
        finally:
            aside.unlink(missing_ok=True)

    def _busy_message(self, holder: dict[str, Any], host: str) -> str:
        who = f"process {holder.get('pid', '?')}"
        if holder.get("host") not in (None, host):
            who += f" on host {holder.get('host')}"
        command = f" ({holder['command']})" if holder.get("command") else ""
        since = f", since {holder['started']}" if holder.get("started") else ""
        gone = (
            f"; if that process is gone, delete {self.path}"
            if holder.get("host") not in (None, host)
            else "; wait for it to finish or stop it"
        )
        return f"{self.what} is in use by {who}{command}{since}{gone}"


def lock_beside(folder: Path) -> Path:
    """The lock of a folder written as a whole (built aside, then renamed into place): ``.<name>.lock`` beside it."""
    return folder.parent / f".{folder.name}.lock"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid(holder: dict[str, Any]) -> int:
    pid = holder.get("pid")
    return pid if isinstance(pid, int) and pid > 0 else -1
