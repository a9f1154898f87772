"""Wall-clock timing of super-resolution methods: seconds per image and output megapixels per second."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued accelerator work so a timer measures it (no-op on the CPU)."""
    if device is None:
        return
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(dev)
    elif dev.type == "mps" and getattr(torch, "mps", None) is not None:
        torch.mps.synchronize()


class Stopwatch:
    """`with Stopwatch(device) as sw: ...` then `sw.seconds`."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def megapixels(height: int, width: int) -> float:
    return height * width / 1e6


@dataclass
class Throughput:
    """Accumulates (output pixels, seconds) over images."""

    images: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    per_image: list[float] = field(default_factory=list)

    def add(self, seconds: float, height: int, width: int) -> None:
        self.images += 1
        self.seconds += seconds
        self.megapixels += megapixels(height, width)
        self.per_image.append(seconds)

    @property
    def seconds_per_image(self) -> float | None:
        return self.seconds / self.images if self.images else None

    @property
    def megapixels_per_second(self) -> float | None:
        return self.megapixels / self.seconds if self.seconds > 0 else None
