"""Validation of user options, in one place for the CLI and the Python API.

Each validator takes the option's name (as the user typed it: ``--step-size`` on the command
line, ``step_size`` in Python) and a value, and returns the value converted or raises
:class:`OptionError` saying what is allowed. The CLI uses them as argparse ``type=`` functions
(:func:`cli_type`), so a bad value exits with code 2 and a one-line message naming the option;
the API classes (``TrainConfig``, ``Predictor``) call the same functions.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import Field, field, fields
from pathlib import Path
from typing import Any, TypeVar

from nnseg.errors import NnsegError

T = TypeVar("T")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OptionError(NnsegError, ValueError):
    """An option value is out of range or malformed."""


def _number(name: str, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise OptionError(f"{name} must be an integer, got {value!r}")
    if kind is float and not math.isfinite(number):
        raise OptionError(f"{name} must be a finite number, got {value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    number = _number(name, value, int)
    if number < 1:
        raise OptionError(f"{name} must be >= 1, got {number}")
    return number


def non_negative_int(name: str, value: Any) -> int:
    number = _number(name, value, int)
    if number < 0:
        raise OptionError(f"{name} must be >= 0, got {number}")
    return number


def positive_float(name: str, value: Any) -> float:
    number = _number(name, value, float)
    if number <= 0:
        raise OptionError(f"{name} must be a positive number, got {number:g}")
    return number


def non_negative_float(name: str, value: Any) -> float:
    number = _number(name, value, float)
    if number < 0:
        raise OptionError(f"{name} must be >= 0, got {number:g}")
    return number


def fraction(name: str, value: Any) -> float:
    """A number in (0, 1] (e.g. the sliding-window step as a fraction of the patch)."""
    number = _number(name, value, float)
    if not 0 < number <= 1:
        raise OptionError(f"{name} must be in (0, 1] (a fraction of the patch), got {number:g}")
    return number


def unit_interval(name: str, value: Any) -> float:
    number = _number(name, value, float)
    if not 0 <= number <= 1:
        raise OptionError(f"{name} must be in [0, 1], got {number:g}")
    return number


def choice(*allowed: str) -> Callable[[str, Any], str]:
    """A validator accepting one of ``allowed``."""

    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise OptionError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    check.__name__ = "choice"
    return check


def yes_no(name: str, value: Any) -> bool:
    """A boolean given as yes/no (also true/false, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "on", "1"):
        return True
    if text in ("no", "false", "off", "0"):
        return False
    raise OptionError(f"{name} must be yes or no, got {value!r}")


def percent(name: str, value: Any) -> float:
    """A number in (0, 100]."""
    number = _number(name, value, float)
    if not 0 < number <= 100:
        raise OptionError(f"{name} must be in (0, 100] (a percentage), got {number:g}")
    return number


def fold(name: str, value: Any) -> int | str:
    """A fold index (>= 0) or "all"."""
    if value == "all":
        return "all"
    try:
        number = _number(name, value, int)
    except OptionError:
        raise OptionError(f"{name} must be a fold index (0, 1, ...) or 'all', got {value!r}") from None
    if number < 0:
        raise OptionError(f"{name} must be a fold index (0, 1, ...) or 'all', got {number}")
    return number


def device(name: str, value: Any) -> str:
    """ "auto", "cpu", "cuda", "cuda:N" or "mps" (availability is checked when the device is used)."""
    text = str(value)
    if not _DEVICE.match(text):
        raise OptionError(f"{name} must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def writable_folder(name: str, path: str | os.PathLike) -> Path:
    """Check that ``path`` is (or can be created as) a writable folder, without creating it.

    A test file is written and removed in the folder, or in its nearest existing parent.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OptionError(f"{name} {folder}: {existing} is a file, not a folder; choose a folder")
    probe = existing / f".nnseg-write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OptionError(
            f"{name} {folder}: cannot write in {existing} ({exc.strerror or exc}); choose a writable folder"
        ) from None
    return folder


def integer(name: str, value: Any) -> int:
    return _number(name, value, int)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def duration(name: str, value: Any) -> float:
    """A positive duration in seconds: a number (seconds) or text such as ``90s``, ``20m``, ``1.5h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return positive_float(name, value)
    match = _DURATION.match(str(value))
    if not match:
        raise OptionError(f"{name} must be a duration such as 90s, 20m or 1.5h, got {value!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise OptionError(f"{name} must be a positive duration, got {value!r}")
    return seconds


def cli_type(validator: Callable[[str, Any], Any], option: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that applies ``validator`` (argparse prints the message and exits with 2)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            return validator(option, text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from None

    parse.__name__ = validator.__name__
    return parse


# ---------------------------------------------------------------------------------------------- options as data


def option(
    default: Any,
    help: str,
    *,
    flag: str | tuple[str, ...] | None = None,
    validate: Callable[[str, Any], Any] | None = None,
    metavar: str | None = None,
    many: bool = False,
) -> Any:
    """A config dataclass field that is also a command-line option (one source of name, default, help, check).

    Args:
        default: the default value (shown in ``--help``).
        help: one line for ``--help``.
        flag: the option's spelling(s) (default ``--field-name``); for a bool defaulting to True, the flag that
            turns it off (e.g. ``--no-amp``).
        validate: a validator of this module, applied on the command line and in ``__post_init__`` (to each
            item when ``many``).
        metavar: the value's name in ``--help``.
        many: the option takes one or more values (a tuple).
    """
    metadata = {"help": help, "flag": flag, "validate": validate, "metavar": metavar, "many": many}
    return field(default=default, metadata=metadata)


def flags_of(item: Field) -> tuple[str, ...]:
    """The command-line spellings of a config field."""
    flag = item.metadata.get("flag")
    if flag:
        return (flag,) if isinstance(flag, str) else tuple(flag)
    prefix = "--no-" if item.default is True else "--"
    return (prefix + item.name.replace("_", "-"),)


def validate_fields(config: Any) -> None:
    """Apply each field's validator (``option(validate=...)``) to its value and keep what it returns, as the
    command line does (``time_budget="20m"`` becomes 1200.0, ``head_bias_prior="no"`` False); None: not set."""
    for item in fields(config):
        check = item.metadata.get("validate")
        value = getattr(config, item.name)
        if check is None or value is None:
            continue
        if item.metadata.get("many"):
            converted = tuple(check(item.name, one) for one in value)
        else:
            converted = check(item.name, value)
        object.__setattr__(config, item.name, converted)  # frozen dataclasses: set once, in __post_init__


def add_config_options(parser: Any, config_type: type, *, exclude: tuple[str, ...] = ()) -> None:
    """Add one argparse option per ``option()`` field of ``config_type``: names, defaults and help come from it."""
    for item in fields(config_type):
        if item.name in exclude or "help" not in item.metadata:
            continue
        flags, check, default = flags_of(item), item.metadata.get("validate"), item.default
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            parser.add_argument(*flags, dest=item.name, action=action, help=item.metadata["help"])
            continue
        shown = (
            ""
            if default is None
            else f" (default {default:.4g})"
            if isinstance(default, float)
            else f" (default {default})"
        )
        parser.add_argument(
            *flags,
            dest=item.name,
            default=default,
            metavar=item.metadata.get("metavar"),
            type=cli_type(check, flags[-1]) if check else None,
            nargs="+" if item.metadata.get("many") else None,
            help=item.metadata["help"] + shown,
        )


def config_from_args(config_type: type[T], args: Any, **values: Any) -> T:
    """Build ``config_type`` from parsed options (fields added by :func:`add_config_options`) and ``values``."""
    given = {}
    for item in fields(config_type):  # type: ignore[arg-type]  # a dataclass type
        if hasattr(args, item.name):
            value = getattr(args, item.name)
            given[item.name] = tuple(value) if item.metadata.get("many") and value is not None else value
    return config_type(**{**given, **values})
