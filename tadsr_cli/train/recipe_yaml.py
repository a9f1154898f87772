"""Recipe YAML with line numbers, and values checked against dataclass annotations (errors name key and line)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

import yaml

from tadsr_cli.base.errors import RecipeError

KeyPath = tuple[str | int, ...]


class KeyLines:
    """Maps a key path (("optim", "g", "lr")) to the 1-based line where it is written, and names the source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[KeyPath, int] = {}
        self.overridden: set[KeyPath] = set()

    def loc(self, path: KeyPath) -> str:
        """'FILE:LINE' of `path` (or of its nearest written ancestor), or '--set KEY' for an overridden key."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.overridden:
                return f"--set {dotted_key(path[:n])}"
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source

    def where(self, path: KeyPath) -> str:
        """'FILE:LINE: a.b' (or '--set a.b') naming the key."""
        loc, dotted = self.loc(path), dotted_key(path) or "<top>"
        return loc if loc == f"--set {dotted}" else f"{loc}: {dotted}"


def dotted_key(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines)


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, KeyLines]:
    lines = KeyLines(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{source}{at}: not valid YAML ({problem})") from None
    if node is not None:
        _record_lines(node, (), lines.lines)
    return data, lines


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


# YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string: accept such spellings where a number is expected.
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _accepts(value: Any, tp: Any) -> bool:
    """Shallow check: does `value` have the outer shape of `tp` (scalar type, list, mapping, literal)?"""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, m) for m in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()) is not None
        )
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return True


def check_value(value: Any, tp: Any, path: KeyPath, lines: KeyLines) -> Any:
    """Return `value` converted to `tp` (ints -> floats, nested dataclasses built) or raise RecipeError."""
    if not _accepts(value, tp):
        raise RecipeError(f"{lines.where(path)}: expected {_type_name(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        member = next(m for m in typing.get_args(tp) if m is not type(None) and _accepts(value, m))
        return check_value(value, member, path, lines)
    if tp is float:
        return float(value.strip()) if isinstance(value, str) else float(value)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        return [check_value(v, item_tp, path + (i,), lines) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path, lines)
    return value


# Recipe fields that record provenance; never keys of the YAML.
META_FIELDS = {"source", "raw"}


def build_dataclass(cls: type, data: dict[str, Any], path: KeyPath, lines: KeyLines) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in META_FIELDS]
    for key in data:
        if key not in names:
            raise RecipeError(
                f"{lines.where(path + (str(key),))}: unknown key {str(key)!r}; known keys here: {', '.join(names)}"
            )
    kwargs = {key: check_value(value, hints[key], path + (key,), lines) for key, value in data.items()}
    return cls(**kwargs)
