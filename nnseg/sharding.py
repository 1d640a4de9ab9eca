"""Cases split over processes and machines: ``--num-parts P --part-id I`` and ``torchrun``.

Every process sees the same sorted list of cases and computes the same assignment, so the
parts are disjoint and together cover every case, whatever order the processes run in and
however often they are rerun: each case is written once, by its owner. The assignment
balances the input bytes (largest case first to the least loaded part, ties to the lower part;
for equal sizes that is round robin), so one part does not get all the large scans.

Under ``torchrun`` each rank is a part of its own; with ``--num-parts`` as well (a job array
of torchrun jobs) part ``I`` is split again over the ranks: ``P x WORLD_SIZE`` parts in all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nnseg.options import OptionError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @classmethod
    def resolve(cls, num_parts: int | None, part_id: int | None, *, rank: int = 0, world_size: int = 1) -> Shard:
        """The shard of this process from ``--num-parts/--part-id`` and the launcher's rank and world size."""
        if (num_parts is None) != (part_id is None):
            raise OptionError("--num-parts and --part-id go together: give both (e.g. --num-parts 4 --part-id 0)")
        parts, part = (1, 0) if num_parts is None else (int(num_parts), int(part_id or 0))
        if parts < 1:
            raise OptionError(f"--num-parts must be >= 1, got {parts}")
        if not 0 <= part < parts:
            raise OptionError(f"--part-id must be in 0..{parts - 1} for --num-parts {parts}, got {part}")
        return cls(index=part * world_size + rank, count=parts * world_size)

    def select(self, items: Sequence[T], size: Callable[[T], int] = lambda _: 1) -> list[T]:
        """This part's items, in their given order (the caller sorts them the same way in every process)."""
        if self.is_whole:
            return list(items)
        loads = [0] * self.count
        owner = [0] * len(items)
        order = sorted(range(len(items)), key=lambda i: (-size(items[i]), i))
        for i in order:
            part = min(range(self.count), key=lambda p: (loads[p], p))
            owner[i] = part
            loads[part] += max(1, size(items[i]))
        return [item for item, part in zip(items, owner) if part == self.index]

    def describe(self, selected: int, total: int) -> str:
        return f"part {self.index + 1} of {self.count}: {selected} of {total} case(s)"


def file_bytes(paths: Sequence[os.PathLike | str]) -> int:
    """Total size of the files that exist (a case's input bytes); a folder (a DICOM series) counts its files."""
    total = 0
    for path in map(Path, paths):
        try:
            files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
            total += sum(file.stat().st_size for file in files)
        except OSError:
            continue
    return total
