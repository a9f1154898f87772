"""Where model files live on this machine: the embedded ones in the package, pulled ones in the user's cache;
`--model` (a catalogue name or a file path) resolved to one of them and loaded.

Nothing here touches the network: a released model that is not in the cache yet is `tadsr models pull`'s job
(`models/download.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tadsr_cli.base.errors import ModelNotFoundError
from tadsr_cli.models.catalog import REGISTRY, RegistryEntry, model_name

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def cache_dir() -> Path:
    """`$TADSR_HOME`, else `$XDG_CACHE_HOME/tadsr`, else `~/.cache/tadsr`."""
    if home := os.environ.get("TADSR_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tadsr"


def model_path(entry: RegistryEntry) -> Path:
    """Where the ready model file of `entry` lives (package data for the embedded one, else the cache)."""
    if entry.embedded_file:
        return WEIGHTS_DIR / entry.embedded_file
    return cache_dir() / "models" / f"{entry.name}.safetensors"


def is_available(entry: RegistryEntry) -> bool:
    return model_path(entry).is_file()


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """Map `--model` (None = embedded default, a registry name, or a file path) to a model file."""
    text = model_name(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        path = model_path(entry)
        if path.is_file():
            return path
        if entry.embedded_file:
            raise ModelNotFoundError(
                f"the embedded model {path.name} is missing from this installation; pass --model FILE"
            )
        raise ModelNotFoundError(f"model {text!r} is not downloaded yet: run `tadsr models pull {text}`")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    known = ", ".join(sorted(REGISTRY))
    raise ModelNotFoundError(f"--model {text!r} is neither a file nor a known model ({known})")


def resolve_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a `DiffusionSR` for `--model` (see `resolve_model_path`)."""
    from tadsr_cli.models.checkpoints import load_model_file

    return load_model_file(resolve_model_path(name_or_path), device=device)
