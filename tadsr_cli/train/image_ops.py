"""The elementary image operations of the training degradation (float32 HxWx3 RGB, nominally in [0, 1]).

Each is deterministic given its inputs (OpenCV filtering, resizing and JPEG), so one seed always gives one LQ.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

RESIZE_MODES: dict[str, int] = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}


def quantize(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to 8-bit levels, staying float32."""
    return (np.clip(np.rint(img * 255.0), 0, 255) * (1.0 / 255.0)).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def trim_kernel(kernel: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Drop outer rings of a centred odd kernel whose entries are all below ``tol`` in magnitude.

    A narrow Gaussian in a 21x21 support is numerically 3x3; the dropped mass (< 80 * tol) is far below float32
    resolution of [0, 1] images, and the small kernel is filtered directly instead of through a DFT (~10x faster).
    """
    k = kernel
    while (
        k.shape[0] > 1
        and max(np.abs(k[0]).max(), np.abs(k[-1]).max(), np.abs(k[:, 0]).max(), np.abs(k[:, -1]).max()) < tol
    ):
        k = k[1:-1, 1:-1]
    return k


def filter_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D filtering with reflect (101) borders, like Real-ESRGAN's ``filter2D``; negligible borders are trimmed."""
    kernel = trim_kernel(kernel)
    if kernel.shape == (1, 1):
        return img if kernel[0, 0] == 1.0 else img * np.float32(kernel[0, 0])
    return cv2.filter2D(img, cv2.CV_32F, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)


def resize(img: np.ndarray, size_hw: tuple[int, int], mode: str) -> np.ndarray:
    """Resize to ``(h, w)`` with OpenCV (area / bilinear / bicubic; no anti-aliasing for the last two)."""
    h, w = max(1, int(size_hw[0])), max(1, int(size_hw[1]))
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=RESIZE_MODES[mode])


def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, HxWx1."""
    return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]


def add_gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    """Additive Gaussian noise of std ``sigma / 255`` (one channel shared by R, G, B when ``gray``), clipped."""
    h, w = img.shape[:2]
    shape = (h, w, 1) if gray else (h, w, 3)
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def _poisson_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Shot noise of an 8-bit-quantised image whose number of distinct levels sets the photon count."""
    levels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    n_unique = int(np.count_nonzero(np.bincount(levels.ravel(), minlength=256)))
    vals = float(2 ** math.ceil(math.log2(max(n_unique, 1)))) if n_unique > 1 else 1.0
    q = levels.astype(np.float64) / 255.0
    return (rng.poisson(q * vals) / vals - q).astype(np.float32)


def add_poisson_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
    """Poisson (shot) noise times ``scale``, colour or gray (luma noise shared by the channels), clipped."""
    noise = _poisson_noise(rng, _gray(img) if gray else img)
    return np.clip(img + noise * np.float32(scale), 0.0, 1.0)


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with the OpenCV (libjpeg) codec at ``quality`` (clips to [0, 1] first)."""
    bgr = to_uint8(img)[..., ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(dec[..., ::-1]).astype(np.float32) * np.float32(1.0 / 255.0)


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Anti-aliased bicubic downscale by ``scale`` (PIL ``BICUBIC`` per channel in float: MATLAB-``imresize``-like)."""
    h, w = img.shape[:2]
    size = (max(1, w // scale), max(1, h // scale))
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F").resize(
                size, Image.Resampling.BICUBIC
            )
        )
        for c in range(img.shape[2])
    ]
    return np.stack(chans, axis=-1)
