"""The shape of a JSON document read back from a state file, checked before any code indexes it.

A manifest, an attempts record or a database row that opsctl wrote can come back as something
else: edited by hand, cut short by a full disk, written by another tool or another version.
Reading it with `doc["steps"][0]["name"]` then fails three calls later as a KeyError or a
TypeError, a traceback far from the file. `problem` walks the document once against a small
description of what opsctl writes and names the first value out of place by its path
(`steps[2].array_size: 'x' is not an integer`), so the caller can say which file, in one line.

A shape is written as plain data:
- a type (`str`, `int`, `float`, `bool`, `dict`, `list`): a value of it (`int` is never a
  bool; `float` takes any finite number);
- `Int(low, high)`: an integer in a range;
- `Text(pattern)`: a string the regular expression matches whole (a name that becomes a path);
- `OneOf(values)`: one of some literal values;
- `Maybe(shape)`: null, or (as a key's shape) the key may be missing too;
- `Absent(shape)`: as a key's shape, the key may be missing, but is never null;
- `ListOf(shape)` and `MapOf(shape, keys)`: a list, or an object, of values of one shape (the
  object's keys matched whole by the regular expression `keys`, if given);
- a dict of key to shape: an object with those keys; keys opsctl does not know are allowed, so a
  newer opsctl's record still reads here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opsctl_contract.errors import brief


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Text:
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class OneOf:
    values: tuple[object, ...]


@dataclass(frozen=True)
class Maybe:
    shape: object


@dataclass(frozen=True)
class Absent:
    shape: object


@dataclass(frozen=True)
class ListOf:
    shape: object


@dataclass(frozen=True)
class MapOf:
    shape: object
    keys: re.Pattern[str] | None = None


_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a finite number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}


def problem(value: object, shape: object, at: str = "") -> str | None:
    """The first place where `value` departs from `shape`, as `path: what is wrong`; None if
    it has the shape. Iterative: a document nested a million deep costs no recursion."""
    pending: list[tuple[object, object, str]] = [(value, shape, at)]
    while pending:
        value, shape, at = pending.pop()
        where = at or "the document"
        if isinstance(shape, Maybe):
            if value is not None:
                pending.append((value, shape.shape, at))
        elif isinstance(shape, Absent):  # present, so of its shape
            pending.append((value, shape.shape, at))
        elif isinstance(shape, Int):
            if not _is(value, int) or not shape.low <= value <= shape.high:  # type: ignore[operator]
                return f"{where}: {brief(value)} is not an integer from {shape.low} to {shape.high}"
        elif isinstance(shape, Text):
            if not isinstance(value, str) or not shape.pattern.fullmatch(value):
                return f"{where}: {brief(value)} is not a string of the form {shape.pattern.pattern}"
        elif isinstance(shape, OneOf):
            if not any(_is(value, type(v)) and value == v for v in shape.values):
                return f"{where}: {brief(value)} is not one of {', '.join(map(str, shape.values))}"
        elif isinstance(shape, ListOf):
            if not isinstance(value, list):
                return f"{where}: {brief(value)} is not a list"
            pending.extend((item, shape.shape, f"{at}[{i}]") for i, item in reversed(list(enumerate(value))))
        elif isinstance(shape, MapOf):
            if not isinstance(value, dict):
                return f"{where}: {brief(value)} is not an object"
            if shape.keys and (bad := next((k for k in value if not shape.keys.fullmatch(k)), None)):
                return f"{where}: the key {brief(bad)} is not of the form {shape.keys.pattern}"
            pending.extend((item, shape.shape, _key(at, k)) for k, item in reversed(value.items()))
        elif isinstance(shape, Mapping):
            if not isinstance(value, dict):
                return f"{where}: {brief(value)} is not an object"
            if missing := next(
                (k for k, v in shape.items() if k not in value and not isinstance(v, Maybe | Absent)), None
            ):
                return f"{where} has no {missing!r}"
            pending.extend((value[k], v, _key(at, k)) for k, v in reversed(list(shape.items())) if k in value)
        elif isinstance(shape, type):
            if not _is(value, shape):
                return f"{where}: {brief(value)} is not {_NAMES.get(shape, shape.__name__)}"
        else:
            raise TypeError(f"not a shape: {shape!r}")
    return None


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # and finite: JSON as Python reads it, and SQLite, hold NaN and infinities
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _key(at: str, key: object) -> str:
    return f"{at}.{key}" if at else str(key)
