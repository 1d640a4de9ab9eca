"""User-facing error types: the CLI prints their message and exits with code 2."""

from __future__ import annotations


def _message_lines(exc: BaseException) -> list[str]:
    """The non-empty lines of an exception's message, stripped; its type's name when there are none."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run over many lines)."""
    return _message_lines(exc)[0]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's whole message on one line (its lines joined), cut at ``limit`` characters."""
    text = " ".join(_message_lines(exc))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NnsegError(Exception):
    """An error caused by the user's input (a file, a folder, an option), with a message that says what to fix."""


class ImageReadError(NnsegError):
    """An image or label file could not be read (missing, truncated, unknown format, unsupported layout)."""


class DatasetError(NnsegError):
    """A dataset folder or its dataset.json is malformed."""
