"""MATLAB-compatible `imresize(..., 'bicubic')`, with MATLAB's antialiasing when shrinking.

Facts of MATLAB's algorithm (as used by NIQE and by the SR field's bicubic degradations):
* cubic convolution kernel with a = -0.5 (Keys);
* output size `ceil(in * scale)`; output pixel `x` (1-based) maps to input `u = x / scale + 0.5 * (1 - 1 / scale)`;
* when shrinking with antialiasing the kernel is stretched: `h(x) = scale * cubic(scale * x)`, width `4 / scale`;
* taps: `left = floor(u - width / 2)`, `ceil(width) + 2` of them, weights normalised to sum 1 per output pixel;
* out-of-range input indices are mirrored with edge repetition ("symmetric": -1 -> 0, n -> n-1);
* the image is resized along rows first, then along columns.
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _symmetric_index(idx: np.ndarray, n: int) -> np.ndarray:
    period = 2 * n
    m = np.mod(idx, period)
    return np.where(m < n, m, period - 1 - m)


def resize_weights(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weights `(out_len, taps)` and input indices `(out_len, taps)` (already mirrored into range)."""
    kernel_width = 4.0
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    dist = u[:, None] - indices
    weights = scale * _cubic(dist * scale) if shrink_aa else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return weights, _symmetric_index(indices.astype(np.int64) - 1, in_len)


def _resize_axis(img: np.ndarray, out_len: int, scale: float, axis: int, antialiasing: bool) -> np.ndarray:
    weights, indices = resize_weights(img.shape[axis], out_len, scale, antialiasing)
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((out_len,) + moved.shape[1:], dtype=np.float64)
    extra = (slice(None),) + (None,) * (moved.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k][extra] * moved[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """Resize an `HxW` or `HxWxC` float image by `scale` like MATLAB's bicubic `imresize` (float64 out, no rounding)."""
    x = np.asarray(img, dtype=np.float64)
    out_h, out_w = math.ceil(x.shape[0] * scale), math.ceil(x.shape[1] * scale)
    x = _resize_axis(x, out_h, scale, 0, antialiasing)
    return _resize_axis(x, out_w, scale, 1, antialiasing)
