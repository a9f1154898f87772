"""Motion-compensated temporal smoothing of upscaled video frames: less flicker, same detail.

A per-frame upscaler flickers on moving video even when each frame is good: the prior noise stays put on screen
while the content moves, and the x4 downscale aliases differently at every sub-pixel position. `TemporalStabilizer`
wraps any frame upscaler and blends each output with the previous *output*, warped onto the current frame by the
optical flow of the low-resolution input frames (OpenCV DIS, cheap at that size):

    out[t] = w * warp(out[t-1], flow) + (1 - w) * sr[t],   w = strength * confidence

`confidence` is 1 where the warped previous input matches the current input and falls to 0 where it does not
(occlusions, new content, wrong flow), so those pixels take the fresh frame alone and nothing ghosts; a scene cut
(most of the frame unmatched) starts the recursion over. Because the blend is recursive, a frame carries an
exponentially fading memory of the earlier ones along the motion (about 1 / (1 - strength) frames).
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

# Defaults measured with benchmarks/bench_video_stability.py (see pipeline/settings.py for the figures).
DEFAULT_TOLERANCE = 0.04  # input mismatch (0-1, mean over RGB) at which a pixel stops borrowing from the past
MISMATCH_BLUR = 1.0  # px (input scale): compare inputs without their aliasing, which moves with sub-pixel shifts
SCENE_CUT_FRACTION = 0.5  # restart when fewer than this fraction of pixels match the previous frame
MIN_SIDE = 16  # input frames smaller than this pass through (DIS refuses images under ~9 px)


class TemporalStabilizer:
    """A frame upscaler (`scale`, `upscale(rgb)`) that smooths its `inner` upscaler's output along the motion.

    Frames must arrive in display order; `reset()` (or a change of frame size) forgets the past. Attributes other
    than `scale` and `upscale` (e.g. `noise_scale`) are those of the inner upscaler.
    """

    def __init__(self, inner: Any, strength: float, tolerance: float = DEFAULT_TOLERANCE) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"temporal smoothing strength must be in [0, 1), got {strength}")
        if tolerance <= 0.0:
            raise ValueError("tolerance must be > 0")
        self.inner = inner
        self.scale = inner.scale
        self.strength = float(strength)
        self.tolerance = float(tolerance)
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.reset()

    def __getattr__(self, name: str) -> Any:  # only called for attributes this wrapper does not have
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def reset(self) -> None:
        self._prev_lq: np.ndarray | None = None
        self._prev_gray: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None
        self.restarts = 0  # scene cuts detected (for reports and tests)

    def upscale(self, rgb: np.ndarray, progress: Any = None) -> np.ndarray:
        out = self.inner.upscale(rgb) if progress is None else self.inner.upscale(rgb, progress=progress)
        if self.strength == 0.0 or min(rgb.shape[:2]) < MIN_SIDE:
            return out
        lq = rgb.astype(np.float32, copy=False)
        smooth = cv2.GaussianBlur(lq, (0, 0), MISMATCH_BLUR)
        gray = cv2.cvtColor(np.clip(lq * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        prev_out = self._prev_out
        if prev_out is None or prev_out.shape != out.shape:  # the first frame, or a new frame size
            return self._remember(smooth, gray, out)
        assert self._prev_lq is not None and self._prev_gray is not None  # remembered with prev_out
        flow = self._flow.calc(gray, self._prev_gray, None)  # for each current pixel: where it was before
        mismatch = np.abs(smooth - warp(self._prev_lq, flow)).mean(axis=-1)
        confidence = np.clip(1.0 - mismatch / self.tolerance, 0.0, 1.0)
        if float((confidence > 0.5).mean()) < SCENE_CUT_FRACTION:
            self.restarts += 1
            return self._remember(smooth, gray, out)
        h, w = out.shape[:2]
        flow_hr = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow_hr *= np.array([w / flow.shape[1], h / flow.shape[0]], np.float32)
        weight = cv2.resize(confidence * self.strength, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        past = warp(prev_out, flow_hr, cv2.INTER_CUBIC)
        blended = np.clip(out + weight * (past - out), 0.0, 1.0).astype(np.float32, copy=False)
        return self._remember(smooth, gray, blended)

    def _remember(self, smooth: np.ndarray, gray: np.ndarray, out: np.ndarray) -> np.ndarray:
        self._prev_lq, self._prev_gray, self._prev_out = smooth, gray, out
        return out


def warp(img: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """`img` sampled at (x + flow_x, y + flow_y) for every pixel (edges replicated)."""
    gx, gy = _pixel_grid(*flow.shape[:2])
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=2)  # a video needs two sizes (input and output): built once, not twice per frame
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.setflags(write=False)
    gy.setflags(write=False)
    return gx, gy
