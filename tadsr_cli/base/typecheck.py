"""One type checker for plain data (YAML/JSON): describe a type hint, check a value against it, convert it.

`convert(value, hint)` returns the value in the hint's shape (ints to floats, lists to tuples where the hint asks,
nested dataclasses built) or raises `Mismatch` (the path of the offending item, its hint, its value) or
`UnknownKey`. Callers turn these into their own one-line errors (file line for recipes, "model config: field ..."
for model files) and keep their own range checks. Fixed-length tuple hints are not length-checked here: callers
check lengths with messages that say what the items mean.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, Literal

KeyPath = tuple[str | int, ...]

# YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string: with `numeric_strings`, such spellings count as numbers.
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

_SCALARS: dict[Any, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true/false", "true/false values"),
}


def dotted(path: KeyPath) -> str:
    """('optim', 'g', 'betas', 1) -> 'optim.g.betas[1]'."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Mismatch(ValueError):
    """The item at `path` (inside the value checked) does not fit `hint`."""

    def __init__(self, path: KeyPath, hint: Any, value: Any) -> None:
        self.path, self.hint, self.value = path, hint, value
        super().__init__(f"{dotted(path) or '<top>'}: {self.expected}")

    @property
    def expected(self) -> str:
        return f"expected {describe(self.hint)}, got {self.value!r}"


class UnknownKey(ValueError):
    """A mapping for dataclass `known`'s owner has key `key` (at `path`) that is no field of it."""

    def __init__(self, path: KeyPath, key: str, known: list[str]) -> None:
        self.path, self.key, self.known = path, key, known
        super().__init__(f"{dotted(path)}: unknown key {key!r}; known keys here: {', '.join(known)}")


def _members(hint: Any) -> tuple[Any, ...] | None:
    """The members of a union hint (`a | b`, `Optional[a]`), or None for any other hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _item_hint(hint: Any) -> Any:
    """The item hint of list[X] / tuple[X, ...] / tuple[X, Y] (the first), or Any."""
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else Any


def _is_sequence_hint(hint: Any) -> bool:
    return typing.get_origin(hint) in (list, tuple) or hint in (list, tuple)


def _is_mapping_hint(hint: Any) -> bool:
    return typing.get_origin(hint) is dict or hint is dict or dataclasses.is_dataclass(hint)


def _plural(hint: Any) -> str:
    if hint in _SCALARS:
        return _SCALARS[hint][1]
    if _is_sequence_hint(hint):
        return "lists of " + _plural(_item_hint(hint))
    if _is_mapping_hint(hint):
        return "mappings"
    return "values" if hint is Any else f"values ({describe(hint)})"


def describe(hint: Any) -> str:
    """'an integer', 'a list of integers', "'x0' | 'residual'", 'a string or null', 'a mapping', ..."""
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    members = _members(hint)
    if members is not None:
        names = [describe(m) for m in members if m is not type(None)]
        return " or ".join(names + (["null"] if type(None) in members else []))
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if _is_sequence_hint(hint):
        item = _item_hint(hint)
        return "a list" if item is Any else "a list of " + _plural(item)
    if _is_mapping_hint(hint):
        return "a mapping"
    if hint in _SCALARS:
        return _SCALARS[hint][0]
    return getattr(hint, "__name__", str(hint))


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond the float range
        return False


def fits(value: Any, hint: Any, *, numeric_strings: bool = False) -> bool:
    """Shallow check: does `value` have the outer shape of `hint` (scalar, literal, list, mapping)?

    Numbers must be finite; bools are not numbers; with `numeric_strings`, '5e-5' fits a float.
    """
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    members = _members(hint)
    if members is not None:
        return any(fits(value, m, numeric_strings=numeric_strings) for m in members)
    if typing.get_origin(hint) is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        if isinstance(value, str) and numeric_strings and _FLOAT_RE.fullmatch(value.strip()):
            return math.isfinite(float(value.strip()))
        return isinstance(value, int | float) and not isinstance(value, bool) and _finite(value)
    if hint is str:
        return isinstance(value, str)
    if _is_sequence_hint(hint):
        return isinstance(value, list | tuple)
    if _is_mapping_hint(hint):
        return isinstance(value, dict)
    return True


def field_names(cls: type, skip: Collection[str] = ()) -> list[str]:
    """The dataclass's field names in declaration order, less `skip`."""
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def unknown_keys(cls: type, data: Mapping[Any, Any], skip: Collection[str] = ()) -> list[str]:
    """Keys of `data` (in its order, as strings) that are no field of dataclass `cls` (or are in `skip`)."""
    names = set(field_names(cls, skip))
    return [str(k) for k in data if k not in names]


def convert(
    value: Any, hint: Any, path: KeyPath = (), *, numeric_strings: bool = False, skip: Collection[str] = ()
) -> Any:
    """`value` converted to `hint` (ints -> floats, lists -> tuples for tuple hints, dataclasses built from
    mappings, numeric strings -> floats with `numeric_strings`), or `Mismatch` / `UnknownKey` for the first item
    that does not fit. `skip`: dataclass fields that are never keys of the data (e.g. provenance)."""
    if not fits(value, hint, numeric_strings=numeric_strings):
        raise Mismatch(path, hint, value)
    members = _members(hint)
    if members is not None:
        if value is None and type(None) in members:
            return None
        member = next(m for m in members if m is not type(None) and fits(value, m, numeric_strings=numeric_strings))
        return convert(value, member, path, numeric_strings=numeric_strings, skip=skip)
    if hint is float:
        return float(value.strip()) if isinstance(value, str) else float(value)
    if _is_sequence_hint(hint):
        item = _item_hint(hint)
        items = [convert(v, item, path + (i,), numeric_strings=numeric_strings, skip=skip) for i, v in enumerate(value)]
        return tuple(items) if typing.get_origin(hint) is tuple or hint is tuple else items
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path, numeric_strings=numeric_strings, skip=skip)
    if _is_mapping_hint(hint):
        return dict(value)
    return value


def build(
    cls: type, data: Mapping[str, Any], path: KeyPath = (), *, numeric_strings: bool = False, skip: Collection[str] = ()
) -> Any:
    """Dataclass `cls` from a mapping: `UnknownKey` for the first unknown key, then each value `convert`ed."""
    unknown = unknown_keys(cls, data, skip)
    if unknown:
        raise UnknownKey(path + (unknown[0],), unknown[0], field_names(cls, skip))
    hints = typing.get_type_hints(cls)
    kwargs = {
        key: convert(value, hints[key], path + (key,), numeric_strings=numeric_strings, skip=skip)
        for key, value in data.items()
    }
    return cls(**kwargs)
