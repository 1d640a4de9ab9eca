"""User-facing error types: the CLI prints their message and exits with code 2."""

from __future__ import annotations


class NnsegError(Exception):
    """An error caused by the user's input (a file, a folder, an option), with a message that says what to fix."""


class ImageReadError(NnsegError):
    """An image or label file could not be read (missing, truncated, unknown format, unsupported layout)."""


class DatasetError(NnsegError):
    """A dataset folder or its dataset.json is malformed."""
