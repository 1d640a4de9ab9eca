"""Shared pieces of the ``nnseg`` subcommands: exit codes, the one-line-error parser, small option types."""

from __future__ import annotations

import argparse
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def triple(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = text.replace("x", ",").split(",")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"expected three values like 40,48,48, got {text!r}")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected three numbers like 40,48,48, got {text!r}") from None

    return parse


def warn(message: str) -> None:
    from nnseg.progress import write_line

    write_line(f"nnseg: warning: {message}", error=True)
