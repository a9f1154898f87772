"""Checks weight names and shapes against an architecture before it is built (on the meta device: no memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from tadsr_cli.base.errors import CheckpointError, ConfigError

Shapes = Mapping[str, tuple[int, ...]]


def meta_shapes(build: Callable[[], nn.Module], what: str = "model config") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict `build()` would have, without allocating its tensors.

    A config that cannot be built (a negative width, channels not divisible by the group count, ...) raises
    `ConfigError` here, before anything large is allocated.
    """
    try:
        with torch.device("meta"):
            module = build()
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError, ZeroDivisionError, IndexError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what}: cannot build the network ({first})") from None
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def mismatch(expected: Shapes, found: Shapes, optional_suffixes: Iterable[str] = ()) -> str | None:
    """'N missing: ...; N unexpected: ...; N shape mismatch: ...' (first few of each), or None when they match."""
    optional = tuple(optional_suffixes)
    missing = [k for k in expected if k not in found and not (optional and k.endswith(optional))]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: file {tuple(found[k])} vs model {tuple(v)}" for k, v in expected.items()
              if k in found and tuple(found[k]) != tuple(v)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{more}")
    return "; ".join(parts) or None


def check_shapes(expected: Shapes, found: Shapes, what: str, optional_suffixes: Iterable[str] = ()) -> None:
    """Raise `CheckpointError` naming missing/unexpected/misshaped tensors of `what`."""
    problem = mismatch(expected, found, optional_suffixes)
    if problem:
        raise CheckpointError(f"{what} does not match the architecture — {problem}")
