"""The base type checker: descriptions of hints, shallow fits, conversion with item paths, dataclasses built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from tadsr_cli.base.typecheck import (
    Mismatch,
    UnknownKey,
    build,
    convert,
    describe,
    dotted,
    fits,
    unknown_keys,
)


@dataclass
class Inner:
    lr: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    mode: Literal["a", "b"] = "a"
    size: tuple[float, float] = (1.0, 2.0)
    name: str | None = None
    source: str = ""


@pytest.mark.parametrize(
    ("hint", "text"),
    [
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (bool, "true/false"),
        (type(None), "null"),
        (Literal["none", "bf16"], "'none' | 'bf16'"),
        (list[int], "a list of integers"),
        (tuple[str, ...], "a list of strings"),
        (list[list[float]], "a list of lists of numbers"),
        (list, "a list"),
        (int | None, "an integer or null"),
        (None | str, "a string or null"),
        (list[int] | int, "a list of integers or an integer"),
        (dict[str, Any], "a mapping"),
        (Inner, "a mapping"),
    ],
)
def test_describe(hint, text):
    assert describe(hint) == text


def test_fits_numbers_bools_literals():
    assert fits(3, int) and not fits(True, int) and not fits(3.0, int)
    assert fits(3, float) and fits(2.5, float) and not fits(False, float)
    assert not fits(float("nan"), float) and not fits(float("inf"), float) and not fits(10**400, float)
    assert not fits("5e-5", float) and fits("5e-5", float, numeric_strings=True)
    assert not fits("fast", float, numeric_strings=True) and not fits("1e999", float, numeric_strings=True)
    assert fits("a", Literal["a", "b"]) and not fits("c", Literal["a", "b"])
    assert not fits(True, Literal[1]) and fits(1, Literal[1])
    assert fits(None, str | None) and not fits(None, str)
    assert fits([1, "x"], list[int])  # shallow: items are checked by convert
    assert fits(object(), Any)


def test_convert_numbers_lists_tuples():
    assert convert(3, float) == 3.0 and isinstance(convert(3, float), float)
    assert convert(" 5e-5 ", float, numeric_strings=True) == 5e-5
    assert convert([1, 2], tuple[float, float]) == (1.0, 2.0)
    assert convert((1, 2), list[float]) == [1.0, 2.0]
    assert convert(["x"], tuple[str, ...]) == ("x",)
    assert convert(None, int | None) is None
    assert convert([2, 2], list[int] | int) == [2, 2] and convert(2, list[int] | int) == 2
    assert convert({"a": 1}, dict[str, Any]) == {"a": 1}


def test_mismatch_names_the_item():
    with pytest.raises(Mismatch) as info:
        convert({"betas": [0.9, "x"]}, Inner, ("optim",))
    exc = info.value
    assert exc.path == ("optim", "betas", 1) and exc.hint is float and exc.value == "x"
    assert exc.expected == "expected a number, got 'x'"
    assert str(exc) == "optim.betas[1]: expected a number, got 'x'"
    with pytest.raises(Mismatch, match=r"^<top>: expected an integer, got 1\.5$"):
        convert(1.5, int)
    with pytest.raises(Mismatch, match=r"expected 'a' \| 'b', got 'c'"):
        convert({"mode": "c"}, Outer)


def test_build_dataclasses_and_unknown_keys():
    obj = build(Outer, {"inner": {"lr": 2}, "size": [3, 4], "name": "n"})
    assert obj == Outer(inner=Inner(lr=2.0), size=(3.0, 4.0), name="n")
    assert isinstance(obj.inner.lr, float) and isinstance(obj.size, tuple)
    with pytest.raises(UnknownKey) as info:
        build(Outer, {"inner": {"lr_max": 1}}, ("optim",))
    assert info.value.path == ("optim", "inner", "lr_max") and info.value.key == "lr_max"
    assert info.value.known == ["lr", "betas"]
    with pytest.raises(UnknownKey, match="known keys here: inner, mode, size, name$"):
        build(Outer, {"source": "x"}, skip={"source"})
    assert unknown_keys(Outer, {"mode": "a", 1: 2, "zz": 0}) == ["1", "zz"]


def test_dotted():
    assert dotted(()) == "" and dotted(("a", "b", 0, "c")) == "a.b[0].c"
