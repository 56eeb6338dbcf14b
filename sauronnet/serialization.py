"""Strict JSON for frozen dataclasses, and atomic file writes.

Every JSON file SauronNet hands from one stage to the next (fingerprint, plans, case properties) is a frozen
dataclass. Loading is strict: an unknown or a missing key raises a ``ValueError`` naming the file and the key,
so a hand-edited plans.json with a typo fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from sauronnet.atomic import write_text_atomic

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    """Converts dataclasses, tuples, numpy scalars and paths to plain JSON containers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def from_jsonable(cls: type[T], data: Any, where: str = "") -> T:
    """Builds ``cls`` (a dataclass or a typing annotation) from JSON data, strictly.

    Args:
        cls: target type.
        data: parsed JSON.
        where: human-readable location used in error messages (file name and key path).

    Raises:
        ValueError: on unknown or missing keys, or values of the wrong kind.
    """
    return _convert(cls, data, where or "<json>")


def _convert(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object for {tp.__name__}, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data and _is_required(tp, n)]
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} for {tp.__name__}; allowed keys are {names}")
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} for {tp.__name__}")
        kwargs = {n: _convert(hints[n], data[n], f"{where}.{n}") for n in names if n in data}
        try:
            return tp(**kwargs)
        except ValueError as e:  # a dataclass's own check of its values
            raise ValueError(f"{where}: {e}") from None
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, data, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: value {data!r} matches none of {args}: {errors}")
    if origin is tuple:
        if not isinstance(data, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(data)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if origin is dict:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        kt, vt = args
        return {_convert(kt, k, f"{where} key") if kt is not str else k: _convert(vt, v, f"{where}.{k}")
                for k, v in data.items()}
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ValueError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, bool):
            raise ValueError(f"{where}: expected an integer, got {data!r}")
        if isinstance(data, str) and data.lstrip("-").isdigit():
            return int(data)  # JSON object keys are strings
        if isinstance(data, float) and data.is_integer():
            return int(data)
        if not isinstance(data, int):
            raise ValueError(f"{where}: expected an integer, got {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise ValueError(f"{where}: expected true/false, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise ValueError(f"{where}: expected a string, got {data!r}")
        return data
    if tp is Any:
        return data
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def _is_required(cls: type, name: str) -> bool:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes JSON through a temporary file in the same folder and ``os.replace`` (no half-written files)."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """Reads a JSON file, turning a syntax error into a ``ValueError`` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); fix or delete the file") from e


def load_dataclass(cls: type[T], path: str | Path) -> T:
    """Reads ``path`` and builds ``cls`` from it strictly (see :func:`from_jsonable`)."""
    return from_jsonable(cls, read_json(path), where=str(path))
