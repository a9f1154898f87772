"""PSNR and SSIM the way super-resolution papers report them.

Conventions (BasicSR / the ResShift, SinSR and TAD-SR papers):
* both images are converted to the Y channel of ITU-R BT.601 "studio swing" YCbCr (MATLAB `rgb2ycbcr`):
  `Y = 16 + 65.481 R + 128.553 G + 24.966 B` for RGB in [0, 1], so Y lies in [16, 235] on a 0-255 scale;
  Y is *not* rounded;
* `crop_border` pixels (the SR scale factor, 4 for x4) are removed from every edge before measuring;
* PSNR uses a peak of 255;
* SSIM uses an 11x11 Gaussian window with sigma 1.5, `C1 = (0.01 * 255)^2`, `C2 = (0.03 * 255)^2`, population
  (not sample) statistics, averaged over the window positions that lie fully inside the (cropped) image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tadsr_cli.base.errors import InputError
from tadsr_cli.pipeline.image_read import to_float01

Y_COEFFS_RGB = (65.481, 128.553, 24.966)  # per unit RGB in [0, 1]; plus the 16 offset


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """RGB `HxWx3` (uint8, uint16 or float in [0, 1]) -> BT.601 Y, float64, on the 0-255 scale (16..235).

    A `HxW` (grey) image is returned as its 0-255 values unchanged (no studio-swing conversion).
    """
    x = to_float01(img, np.float64)
    if x.ndim == 2:
        return x * 255.0
    if x.ndim != 3 or x.shape[2] != 3:
        raise InputError(f"expected an RGB image HxWx3, got shape {img.shape}")
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return 16.0 + Y_COEFFS_RGB[0] * r + Y_COEFFS_RGB[1] * g + Y_COEFFS_RGB[2] * b


def _prepare(sr: np.ndarray, gt: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != gt.shape:
        raise InputError(f"image shapes differ: {sr.shape} vs {gt.shape}")
    if y_channel:
        a, b = rgb_to_y(sr), rgb_to_y(gt)
    else:
        a, b = to_float01(sr, np.float64) * 255.0, to_float01(gt, np.float64) * 255.0
    if crop_border > 0:
        a = a[crop_border:-crop_border, crop_border:-crop_border, ...]
        b = b[crop_border:-crop_border, crop_border:-crop_border, ...]
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"image {sr.shape} is too small for a {crop_border}-px border crop")
    return a, b


def psnr(sr: np.ndarray, gt: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB between two RGB images (see the module docstring); `inf` for identical images."""
    a, b = _prepare(sr, gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = cv2.getGaussianKernel(size, sigma).astype(np.float64)  # normalised 1-D samples
    return g @ g.T


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    win = _gaussian_window()
    half = win.shape[0] // 2
    if a.shape[0] <= 2 * half or a.shape[1] <= 2 * half:
        raise InputError(f"image {a.shape} is too small for an 11x11 SSIM window after the border crop")

    def filt(x: np.ndarray) -> np.ndarray:
        # filter2D is a correlation; the window is symmetric. Keep only fully-inside ("valid") positions.
        return cv2.filter2D(x, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)[half:-half, half:-half]

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(sr: np.ndarray, gt: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """SSIM between two RGB images (Y channel by default; per-channel mean otherwise)."""
    a, b = _prepare(sr, gt, crop_border, y_channel)
    if a.ndim == 2:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))
