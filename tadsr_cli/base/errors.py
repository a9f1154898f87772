"""Typed errors raised by the library. Only `cli.py` turns them into messages and exit codes."""

from __future__ import annotations


class TadsrError(Exception):
    """Base class for every error the library raises on purpose."""


class ConfigError(TadsrError):
    """A model, schedule or recipe configuration is invalid."""


class CheckpointError(TadsrError):
    """A weights file cannot be loaded into the chosen architecture (missing/unexpected keys, shapes, format)."""


class ModelNotFoundError(TadsrError):
    """A model name or path does not resolve to a weights file."""


class InputError(TadsrError):
    """An input file cannot be read or is not a supported image or video."""


class OutputError(TadsrError):
    """An output cannot be written (folder not writable, would overwrite the input, ...)."""


class EngineUnavailableError(TadsrError):
    """A backend (ONNX Runtime provider, TensorRT, a device) is not available on this machine."""


class NumericalError(TadsrError):
    """A computation produced NaN/Inf and could not be recovered."""


class RecipeError(ConfigError):
    """A training recipe is invalid; the message names the key (and file line where known)."""


class TrainingError(TadsrError):
    """Training cannot start or had to stop (empty data folder, NaN loss, ...)."""
