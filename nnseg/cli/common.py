"""Shared pieces of the ``nnseg`` subcommands: exit codes, the one-line-error parser, small option types."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


_NEGATIVE = re.compile(r"^-\.?\d")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the whole usage block, and values that start with a minus
    (``--time-budget -5m``) given to their option, whose check then says what is wrong with them."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(_attach_negative_values(tokens), namespace)


def _attach_negative_values(tokens: list[str]) -> list[str]:
    """``--option -5m`` -> ``--option=-5m``: argparse takes ``-5m`` for an unknown option otherwise."""
    joined: list[str] = []
    for token in tokens:
        previous = joined[-1] if joined else ""
        if _NEGATIVE.match(token) and previous.startswith("--") and "=" not in previous:
            joined[-1] = f"{previous}={token}"
        else:
            joined.append(token)
    return joined


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


def add_trained_model_options(parser: argparse.ArgumentParser, help: str) -> None:
    """``-c/--config NAME`` and ``-f/--folds K [K ...]`` of the commands that take trained folds (export,
    register): None means the default of :func:`nnseg.inference.model.open_model`."""
    from nnseg.options import cli_type, fold

    parser.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="NAME",
        help="configuration of a work folder (default: 3d_fullres when trained, else the only one trained)",
    )
    parser.add_argument(
        "-f", "--folds", nargs="+", type=cli_type(fold, "--folds"), default=None, metavar="K", help=help
    )


def add_shard_options(parser: argparse.ArgumentParser) -> None:
    """``--num-parts P --part-id I``: this process does part I of P (job arrays); torchrun splits further."""
    from nnseg.options import cli_type, non_negative_int, positive_int

    parser.add_argument(
        "--num-parts",
        type=cli_type(positive_int, "--num-parts"),
        default=None,
        metavar="P",
        help="split the cases into P parts, the same split in every process (with --part-id; e.g. a SLURM array)",
    )
    parser.add_argument(
        "--part-id",
        type=cli_type(non_negative_int, "--part-id"),
        default=None,
        metavar="I",
        help="the part (0..P-1) this process does",
    )


def launch_shard(args: argparse.Namespace):
    """(shard, distributed context) of this process: torchrun's ranks and ``--num-parts/--part-id`` combined."""
    from nnseg.distributed import DistributedContext
    from nnseg.sharding import Shard

    Shard.resolve(args.num_parts, args.part_id)  # bad options fail before joining a process group
    context = DistributedContext.from_launcher("cpu")  # gloo: only small objects travel between the ranks
    shard = Shard.resolve(args.num_parts, args.part_id, rank=context.rank, world_size=context.world_size)
    return shard, context


def warn(message: str) -> None:
    from nnseg.progress import write_line

    write_line(f"nnseg: warning: {message}", error=True)
