"""The ``nnseg`` command: thin subcommands over the Python API (one module per group of stages).

Every subcommand parses its options, calls one library function and prints the
result. Errors caused by the input (:class:`nnseg.errors.NnsegError`) are printed as
one readable message and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from nnseg.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Parser
from nnseg.cli.export import add_export
from nnseg.cli.predict import add_ensemble, add_evaluate, add_find_best, add_postprocess, add_predict
from nnseg.cli.prepare import add_check, add_plan, add_preprocess, add_synth
from nnseg.cli.register import add_register
from nnseg.cli.train import add_demo, add_train
from nnseg.errors import NnsegError
from nnseg.version import __version__

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``nnseg`` argument parser with every subcommand."""
    parser = Parser(prog="nnseg", description="Self-configuring 3D medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"nnseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        add_synth,
        add_check,
        add_plan,
        add_preprocess,
        add_train,
        add_predict,
        add_evaluate,
        add_ensemble,
        add_find_best,
        add_postprocess,
        add_export,
        add_register,
        add_demo,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        with warnings.catch_warnings():  # nnseg's warnings as one line each, for this call only
            warnings.showwarning = _show_warning
            return int(args.handler(args))
    except NnsegError as exc:
        print(f"nnseg: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a folder that cannot be written, a full disk: the user's environment, not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"nnseg: error: {where}{exc.strerror or exc}; check the path, its permissions and free space",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nnseg: interrupted", file=sys.stderr)
        return 130


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """``nnseg: warning: <message>`` for nnseg's own warnings; others as Python prints them."""
    if category is UserWarning:
        print(f"nnseg: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, *args[:2]).rstrip(), file=sys.stderr)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
