"""Workspace: the only code that knows the work folder's file names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK_DIR = Path("nnseg_work")


@dataclass(frozen=True)
class Workspace:
    """Paths of every artifact under one work folder (``--work``, default ``./nnseg_work``)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None) -> Workspace:
        return cls(Path(root) if root is not None else DEFAULT_WORK_DIR)

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def check_report(self) -> Path:
        return self.root / "check_report.json"

    @property
    def inference_choice(self) -> Path:
        """``inference.json``: the configurations and postprocessing chosen by find-best."""
        return self.root / "inference.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    def preprocessed(self, data_identifier: str) -> Path:
        return self.root / "preprocessed" / data_identifier

    def models(self, configuration: str) -> Path:
        return self.root / "models" / configuration

    def fold(self, configuration: str, fold: int | str) -> Path:
        return self.models(configuration) / f"fold_{fold}"
