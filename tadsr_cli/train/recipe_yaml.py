"""Recipe YAML with line numbers, and values checked against dataclass annotations (errors name key and line)."""

from __future__ import annotations

from typing import Any

import yaml

from tadsr_cli.base import typecheck
from tadsr_cli.base.errors import RecipeError
from tadsr_cli.base.typecheck import KeyPath


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
                return f"--set {typecheck.dotted(path[:n])}"
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source

    def where(self, path: KeyPath) -> str:
        """'FILE:LINE: a.b' (or '--set a.b') naming the key."""
        loc, dotted = self.loc(path), typecheck.dotted(path) or "<top>"
        return loc if loc == f"--set {dotted}" else f"{loc}: {dotted}"


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


def check_value(value: Any, tp: Any, path: KeyPath, lines: KeyLines) -> Any:
    """Return `value` converted to `tp` (ints -> floats, '5e-5' -> 5e-05, nested dataclasses built) or raise
    RecipeError naming the key and its line."""
    try:
        return typecheck.convert(value, tp, path, numeric_strings=True, skip=META_FIELDS)
    except typecheck.UnknownKey as exc:
        raise RecipeError(
            f"{lines.where(exc.path)}: unknown key {exc.key!r}; known keys here: {', '.join(exc.known)}"
        ) from None
    except typecheck.Mismatch as exc:
        raise RecipeError(f"{lines.where(exc.path)}: {exc.expected}") from None


# Recipe fields that record provenance; never keys of the YAML.
META_FIELDS = {"source", "raw"}
