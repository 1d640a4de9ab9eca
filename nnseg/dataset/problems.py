"""A problem found in a dataset: data, not a print."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        severity: "error" blocks planning and training; "warning" is worth a look.
        kind: a stable machine-readable class, e.g. "missing_label", "nan_values".
        file: the file (or folder, or dataset.json) the problem is in, relative to the dataset root.
        message: plain words: what is wrong and, where possible, how to fix it.
        case: the case id, when the problem belongs to one case.
    """

    severity: Severity
    kind: str
    file: str
    message: str
    case: str | None = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.message}"

    def to_dict(self) -> dict:
        """JSON-ready representation."""
        return asdict(self)
