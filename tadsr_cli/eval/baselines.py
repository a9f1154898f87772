"""The classical and reference baselines `tadsr eval` compares against: bicubic, Lanczos, Real-ESRGAN."""

from __future__ import annotations

import cv2
import numpy as np

from tadsr_cli.eval import realesrgan
from tadsr_cli.pipeline.image_read import to_float01

BASELINES: dict[str, int | None] = {"bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4, "realesrgan": None}
BASELINE_NOTES = {
    "bicubic": "OpenCV INTER_CUBIC (a=-0.75) on float32 RGB in [0,1], clipped, 8-bit",
    "lanczos": "OpenCV INTER_LANCZOS4 on float32 RGB in [0,1], clipped, 8-bit",
    "realesrgan": realesrgan.NOTE,
}


def baseline_upscale(lq: np.ndarray, kind: str, scale: int) -> np.ndarray:
    """float32 RGB [0, 1] out, `scale` times larger."""
    x = to_float01(lq)
    if kind == "realesrgan":
        return realesrgan.upscale(x, scale)
    h, w = x.shape[:2]
    out = cv2.resize(x, (w * scale, h * scale), interpolation=BASELINES[kind])
    return np.clip(out, 0.0, 1.0)
