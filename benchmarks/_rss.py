"""Peak memory of a command's whole process tree (main process + workers), for the benchmarks.

Linux only: reads ``/proc``. Every ``interval`` seconds the RSS of every process in the tree
is summed (the tree peak), and each process's own high-water mark (``VmHWM``, exact, kept by
the kernel) is read; the reported peak is the larger of the two, so a short-lived spike of a
single process is not missed between samples.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB; zeros when it is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                parts = line.split()
                if parts and parts[0] in values:
                    values[parts[0]] = int(parts[1])
    except (OSError, ValueError):
        pass
    return values["VmRSS:"], values["VmHWM:"]


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(summed RSS of the tree rooted at ``pid``, largest high-water mark of one of its processes), KiB."""
    total, largest, stack = 0, 0, [pid]
    while stack:
        current = stack.pop()
        rss, hwm = _memory_kib(current)
        total += rss
        largest = max(largest, hwm)
        stack.extend(_children(current))
    return total, largest


@dataclass(frozen=True)
class Measured:
    """One measured run: wall seconds, peak RSS of the process tree in MiB, and what it printed."""

    seconds: float
    peak_mib: float
    stdout: str


def run_measured(command: list[str], env: dict[str, str] | None = None, *, interval: float = 0.05) -> Measured:
    """Run ``command`` to completion, sampling its process tree's memory every ``interval`` seconds.

    Raises:
        RuntimeError: the command failed (the message holds the end of its stderr).
    """
    peak_kib = 0
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        nonlocal peak_kib
        while process.poll() is None:
            peak_kib = max(peak_kib, *tree_memory_kib(process.pid))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}):\n{err[-3000:]}")
    return Measured(seconds, peak_kib / 1024, out)
