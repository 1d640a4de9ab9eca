"""Ordered parallel map over cases with bounded memory and a clear message when a worker dies."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from nnseg.errors import NnsegError

T = TypeVar("T")
R = TypeVar("R")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def default_workers(bytes_per_task: int | None = None, *, cap: int = 8) -> int:
    """Worker count from CPU cores and, when ``bytes_per_task`` is given, from free memory (keeping 25 % spare)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(cores, cap))
    free = available_memory_bytes()
    if bytes_per_task and free:
        workers = max(1, min(workers, int(0.75 * free // max(bytes_per_task, 1))))
    return workers


def _safe_context() -> multiprocessing.context.BaseContext:
    """Workers are started from a clean process, never forked from this one.

    A forked child of a process that has already run torch/OpenMP (or started threads) can deadlock
    on locks copied mid-use (seen here: a test process that trained, then preprocessed). "forkserver"
    forks from a fresh server process (cheap after the first worker); "spawn" where there is none.
    """
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int, what: str = "case") -> Iterator[R]:
    """Yield ``fn(item)`` in order; in ``workers`` processes when > 1 (each holds one item at a time).

    Raises:
        NnsegError: a worker process died (usually killed by the OS for lack of memory).
    """
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=_safe_context()) as pool:
            yield from pool.map(fn, items)
    except BrokenProcessPool:
        raise NnsegError(
            f"a worker process died while processing a {what} (most often the operating system killed it for "
            f"lack of memory: {workers} workers each hold one {what}); run again with fewer workers, e.g. --workers 1"
        ) from None
