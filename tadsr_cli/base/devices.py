"""Turns a device name (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`) into a `torch.device` that exists on this machine."""

from __future__ import annotations

import torch

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps, auto"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """`auto` -> CUDA, else MPS, else CPU. An explicitly requested device that is missing is an error.

    `local_rank` (a torchrun process's GPU) picks the CUDA index when none is given; without it a bare `cuda`
    stays index-less (the current CUDA device).
    Raises `ConfigError` for a name that is not a device, `EngineUnavailableError` for one this machine lacks.
    """
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return _cuda_for_rank(local_rank)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r} ({DEVICE_CHOICES})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineUnavailableError("device 'cuda' requested but no CUDA GPU is available")
        if dev.index is None:
            return _cuda_for_rank(local_rank)
        if dev.index >= torch.cuda.device_count():
            raise EngineUnavailableError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps":
        if not mps_available():
            raise EngineUnavailableError("device 'mps' requested but Apple MPS is not available")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r} ({DEVICE_CHOICES})")
    return dev


def _cuda_for_rank(local_rank: int | None) -> torch.device:
    if local_rank is None:
        return torch.device("cuda")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
