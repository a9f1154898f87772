"""The base layer: device resolution and out-of-memory detection."""

from __future__ import annotations

import pytest
import torch

from tadsr_cli.base import devices
from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.base.oom import is_out_of_memory, is_out_of_memory_message


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_and_auto_without_accelerator(no_accelerator):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")
    assert resolve_device("") == torch.device("cpu")


def test_missing_accelerators_are_unavailable_not_config_errors(no_accelerator):
    with pytest.raises(EngineUnavailableError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(EngineUnavailableError, match="MPS"):
        resolve_device("mps")


def test_names_that_are_not_devices(no_accelerator):
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="unsupported device"):
        resolve_device("meta")


def test_cuda_index_from_local_rank(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(EngineUnavailableError, match="only 2 GPU"):
        resolve_device("cuda:2")


def test_auto_prefers_mps_over_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize(("exc", "expected"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), True),
    (RuntimeError("CUDA out of memory"), True),
    (RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer"), True),
    (RuntimeError("CUDNN_STATUS_... cudaErrorMemoryAllocation"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),  # only RuntimeErrors carry allocation failures from torch/ORT
])
def test_out_of_memory_detection(exc, expected):
    assert is_out_of_memory(exc) is expected


def test_out_of_memory_message():
    assert is_out_of_memory_message("Out Of Memory")
    assert not is_out_of_memory_message("invalid argument")


def test_keep_freed_memory_applies_on_glibc_and_respects_the_users_settings(monkeypatch):
    import platform

    from tadsr_cli.base import allocator

    glibc = platform.libc_ver()[0] == "glibc"
    assert allocator.keep_freed_memory() is glibc  # applied where mallopt exists (this CI: Linux/glibc)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.keep_freed_memory() is False  # the user's own glibc tuning wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
