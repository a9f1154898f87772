"""True LPIPS (Zhang et al. 2018, AlexNet, v0.1) through the `lpips` package — only where it can run offline.

It needs the `lpips` package (linear heads ship inside it), `torchvision` (the AlexNet backbone) and the
torchvision AlexNet weights already in the torch hub cache. Nothing is downloaded: if any piece is missing the
metric is reported as unavailable with the reason, and the other metrics still run.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from tadsr_cli.eval.stlpips import MetricUnavailable, to_tensor_pm1

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet weights


def _hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def check_available() -> None:
    """Raise `MetricUnavailable` with the reason if LPIPS cannot run here without a download."""
    for module, hint in (("lpips", "pip install lpips"), ("torchvision", "pip install torchvision")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MetricUnavailable(f"the {module} package is not installed ({hint})")
    if not _hub_checkpoint().is_file():
        raise MetricUnavailable(f"AlexNet backbone weights are not in the torch hub cache ({_hub_checkpoint()})")


class LPIPSMetric:
    """Callable `(sr, gt) -> float` on numpy RGB images."""

    name = "lpips"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        check_available()
        try:
            lpips = importlib.import_module("lpips")
            self.model = lpips.LPIPS(net="alex", version="0.1", verbose=False).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - a third-party package failing for any reason = unavailable
            raise MetricUnavailable(f"the lpips package failed to build its network ({exc})") from exc
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, sr: np.ndarray, gt: np.ndarray) -> float:
        return float(self.model(to_tensor_pm1(sr, self.device), to_tensor_pm1(gt, self.device)).flatten()[0])
