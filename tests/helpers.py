"""Small helpers shared by tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (to prove a folder was not touched)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rotation(degrees: float) -> np.ndarray:
    """A rotation about z by ``degrees`` and about x by half of it (an oblique, not axis-aligned, direction)."""
    a = np.deg2rad(degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return rz @ rx


def run_cli(args: list, capsys) -> tuple[int, str]:
    """Exit code and stderr+stdout of ``nnseg ARGS`` run in this process (an uncaught exception fails the test)."""
    from nnseg.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.err + captured.out
