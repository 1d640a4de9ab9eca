"""Typed JSON for frozen dataclasses: every artifact (fingerprint.json, plans.json) is loaded through here.

``load_dataclass(cls, data)`` checks every key and value against the dataclass's type
hints and says exactly where a hand-edited file is wrong, e.g.
``configurations.3d_fullres.patch_size[1]: expected an integer, got "abc"``.
Supported field types: int, float, str, bool, Literal, ``X | None``, ``tuple[X, ...]``,
fixed tuples, ``dict[str, X]``, unions of those, and nested dataclasses; a union of dataclasses that each
fix one field to a Literal (a tag such as ``type`` or ``architecture``) is picked by that field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from nnseg.atomic import atomic_path
from nnseg.errors import NnsegError

T = TypeVar("T")


class SchemaError(NnsegError):
    """A JSON artifact does not match its schema."""


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and numpy scalars/arrays -> plain JSON values (field order kept)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def flatten_json(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects (dicts, dataclasses) -> ``{"a.b.c": leaf}``; lists and empty objects are leaves."""
    data = to_jsonable(value)
    if not isinstance(data, dict) or (not data and prefix):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, item in data.items():
        flat.update(flatten_json(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def load_dataclass(cls: type[T], data: Any, where: str = "") -> T:
    """Build ``cls`` from parsed JSON, checking every field.

    Raises:
        SchemaError: a key is missing or unknown, or a value has the wrong type; the message gives its path.
    """
    if not isinstance(data, dict):
        raise SchemaError(f"{where or 'top level'}: expected an object, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(f"{_join(where, unknown[0])}: unknown key (expected one of {sorted(fields)})")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{_join(where, name)}: missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], _join(where, name))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{where or 'top level'}: {exc}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) < 60 else text[:57] + "..."


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        tagged = _tagged_union(args)
        if tagged is not None and isinstance(value, dict):
            tag, choices = tagged
            if tag not in value:
                raise SchemaError(f"{_join(where, tag)}: missing (one of {sorted(choices)})")
            if not isinstance(value[tag], str) or value[tag] not in choices:
                raise SchemaError(f"{_join(where, tag)}: expected one of {sorted(choices)}, got {_show(value[tag])}")
            return load_dataclass(choices[value[tag]], value, where)
        for option in args:
            try:
                return _convert(option, value, where)
            except SchemaError:
                continue
        raise SchemaError(f"{where}: {_show(value)} matches none of the allowed types ({_describe(hint)})")
    if hint is type(None):
        if value is not None:
            raise SchemaError(f"{where}: expected null, got {_show(value)}")
        return None
    if origin is typing.Literal:
        if value not in args:
            raise SchemaError(f"{where}: expected one of {list(args)}, got {_show(value)}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return load_dataclass(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise SchemaError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_show(value)}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"{where}: unsupported schema type {hint!r}")


def _tagged_union(options: tuple[Any, ...]) -> tuple[str, dict[Any, type]] | None:
    """``(tag field, tag value -> class)`` when every option is a dataclass with a one-value Literal field of the
    same name (e.g. ``architecture: Literal["unet"]``); the value then picks the class, and errors name its fields."""
    if not all(isinstance(o, type) and dataclasses.is_dataclass(o) for o in options):
        return None
    for name in (f.name for f in dataclasses.fields(options[0])):
        choices: dict[Any, type] = {}
        for option in options:
            hint = typing.get_type_hints(option).get(name)
            if typing.get_origin(hint) is not typing.Literal or len(typing.get_args(hint)) != 1:
                break
            choices[typing.get_args(hint)[0]] = option
        else:
            if len(choices) == len(options):
                return name, choices
    return None


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    return path


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON artifact, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise NnsegError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NnsegError(f"{path}: {what} is not valid JSON ({exc})") from None
