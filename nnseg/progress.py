"""Progress bars for long work (stderr, with ETA)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True
) -> Iterator[T]:
    """Wrap an iterable in a progress bar (rate and ETA) when ``enabled``."""
    if not enabled:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def write_line(text: str, *, error: bool = False) -> None:
    """Print a line without breaking a progress bar that is being drawn."""
    import sys

    tqdm.write(text, file=sys.stderr if error else sys.stdout)
