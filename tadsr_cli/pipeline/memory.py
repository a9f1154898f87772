"""How much memory an engine needs per input pixel and how much the device offers (for `--tile auto`).

* Budget: half of the available RAM on the CPU (`MemAvailable`), 80% of the free memory on CUDA; a
  `TileOptions.memory_budget` overrides it.
* Cost: one probe run of the engine on a `PROBE` x `PROBE` input (once per engine), measured as the rise of the
  process's peak resident memory (Linux `VmHWM`, reset through `/proc/self/clear_refs`) or of torch's CUDA peak;
  both include the network's transient buffers, which is what a tile must fit. Without either measurement a
  conservative `FALLBACK_BYTES_PER_PIXEL` is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

PROBE = 128  # LQ side of the probe run (rounded up to the engine's multiple)
CPU_FRACTION = 0.5
CUDA_FRACTION = 0.8
FALLBACK_BYTES_PER_PIXEL = 8192
SAFETY = 1.1  # headroom over the measured cost (allocator slack)


def engine_device(engine: Any) -> torch.device:
    """The device an engine computes on (torch engines: `.device`; ONNX Runtime: its provider)."""
    dev = getattr(engine, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if getattr(engine, "provider", "") == "CUDAExecutionProvider":
        return torch.device("cuda", int(getattr(engine, "device_id", 0)))
    return torch.device("cpu")


def budget_bytes(device: torch.device) -> int:
    """Memory a tile batch may use on `device`."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    return int(_available_ram() * CPU_FRACTION)


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


_measured: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()  # one probe per engine


def bytes_per_pixel(engine: Any) -> float:
    """Peak memory of one engine call per LQ pixel, measured once per engine on a probe input (module docstring)."""
    try:
        return _measured[engine]
    except (KeyError, TypeError):
        pass
    value = _probe(engine)
    try:
        _measured[engine] = value
    except TypeError:  # not weak-referenceable: measured again next time
        pass
    return value


def _probe(engine: Any) -> float:
    device = engine_device(engine)
    side = -(-PROBE // int(engine.lq_multiple)) * int(engine.lq_multiple)
    rise = _peak_rise(engine, device, side)
    if rise is None:
        log.debug("no memory measurement on %s; assuming %d bytes per pixel", device, FALLBACK_BYTES_PER_PIXEL)
        return float(FALLBACK_BYTES_PER_PIXEL)
    # The fixed part (first-call allocations, workspaces) is counted as per-pixel cost: an overestimate of
    # about 2x for the tiny default at 128 px, i.e. on the safe side.
    return max(rise / float(side * side), 1.0) * SAFETY


def _peak_rise(engine: Any, device: torch.device, side: int) -> float | None:
    """Rise of the peak memory over the current use during one engine call on a `side` x `side` input.

    No warm-up call: allocators that keep their high-water mark (ONNX Runtime's arena) would then show no rise.
    """
    lq = torch.zeros(1, 3, side, side)
    noise = torch.zeros(1, int(engine.latent_channels), side, side)
    if device.type == "cuda" and hasattr(engine, "model"):
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        engine.run(lq, noise)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    if device.type == "cpu" and _reset_peak_rss():
        base = _rss_bytes("VmRSS")
        engine.run(lq, noise)
        return float(_rss_bytes("VmHWM") - base)
    return None


def _reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0), after returning freed heap memory to the OS."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _rss_bytes("VmHWM") > 0
    except OSError:
        return False


def _rss_bytes(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def largest_tile(budget: float, per_pixel: float, batch: int, multiple: int) -> int:
    """The largest square tile side (a multiple of `multiple`, at least one multiple) whose batch fits `budget`."""
    side = int(np.sqrt(max(budget, 0.0) / (per_pixel * max(1, batch))))
    return max(multiple, side // multiple * multiple)
