"""Blur kernels of the Real-ESRGAN degradation model (Wang et al., ICCVW 2021), written from the paper.

All kernels are square, odd-sized float64 arrays that sum to 1, centred on the middle pixel. With the pixel offset
``c = (x, y)`` from the centre and the covariance ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``, the
quadratic form is ``q = c^T S^-1 c`` and

* Gaussian (isotropic when ``sigma_x == sigma_y``):  ``k ~ exp(-q / 2)``
* generalised Gaussian (shape ``beta``):           ``k ~ exp(-q^beta / 2)``
* plateau (shape ``beta``):                        ``k ~ 1 / (1 + q^beta)``
* 2-D sinc (ideal circular low-pass, cut-off ``omega_c``): ``k(r) ~ omega_c J1(omega_c r) / (2 pi r)`` with the
  limit ``omega_c^2 / (4 pi)`` at ``r = 0``.

Every kernel is centrally symmetric (``k(c) == k(-c)``), so correlation (``cv2.filter2D``) equals convolution.
Only numpy is needed: the Bessel function ``J1`` is evaluated with Bessel's integral (see `bessel_j1`).
"""

from __future__ import annotations

import math

import numpy as np

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


def _check_size(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel size must be a positive odd number, got {kernel_size}")


def mesh_grid(kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the kernel centre: ``(xx, yy)``, each ``kernel_size x kernel_size`` (x along columns)."""
    _check_size(kernel_size)
    half = kernel_size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    return xx, yy


def quadratic_form(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``c^T S^-1 c`` on the kernel grid for ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be positive, got {sigma_x}, {sigma_y}")
    xx, yy = mesh_grid(kernel_size)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    # coordinates in the kernel's principal axes (R^T c), then a diagonal quadratic form
    u = cos_t * xx + sin_t * yy
    v = -sin_t * xx + cos_t * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalise(kernel: np.ndarray) -> np.ndarray:
    total = float(kernel.sum())
    if not math.isfinite(total) or total <= 0:
        raise ValueError("degenerate kernel (sum is not positive)")
    return kernel / total


def gaussian_kernel(
    kernel_size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> np.ndarray:
    """Anisotropic Gaussian (isotropic when ``sigma_y`` is None or equals ``sigma_x``)."""
    q = quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(np.exp(-0.5 * q))


def generalized_gaussian_kernel(
    kernel_size: int, sigma_x: float, sigma_y: float | None, theta: float, beta: float
) -> np.ndarray:
    """Generalised Gaussian ``exp(-q^beta / 2)``: beta < 1 has heavier tails, beta > 1 a flatter top."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    q = quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(np.exp(-0.5 * np.power(q, beta)))


def plateau_kernel(
    kernel_size: int, sigma_x: float, sigma_y: float | None, theta: float, beta: float
) -> np.ndarray:
    """Plateau-shaped kernel ``1 / (1 + q^beta)``."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    q = quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(1.0 / (np.power(q, beta) + 1.0))


def bessel_j1(x: np.ndarray | float, points: int = 256) -> np.ndarray:
    """Bessel function of the first kind, order 1: ``J1(x) = 1/(2 pi) int_0^{2 pi} cos(tau - x sin tau) dtau``.

    The integrand is smooth and periodic, so the trapezoid rule converges geometrically; 256 points give ~1e-15
    absolute accuracy for ``|x| <~ 150`` (sinc kernels need ``|x| <= pi * sqrt(2) * 10 ~ 45``).
    """
    x = np.asarray(x, dtype=np.float64)
    tau = np.arange(points, dtype=np.float64) * (2.0 * math.pi / points)
    vals = np.cos(tau - x[..., None] * np.sin(tau))
    return vals.mean(axis=-1)


def sinc_kernel(kernel_size: int, omega_c: float, pad_to: int = 0) -> np.ndarray:
    """2-D sinc (circular low-pass) kernel with cut-off frequency ``omega_c`` (radians/pixel, in (0, pi]).

    ``pad_to`` (odd, >= kernel_size) zero-pads the kernel to that size, which leaves the filtering unchanged.
    """
    _check_size(kernel_size)
    if not 0 < omega_c <= math.pi + 1e-9:
        raise ValueError(f"sinc cut-off must be in (0, pi], got {omega_c}")
    xx, yy = mesh_grid(kernel_size)
    r = np.hypot(xx, yy)
    safe_r = np.where(r == 0, 1.0, r)
    kernel = omega_c * bessel_j1(omega_c * safe_r) / (2.0 * math.pi * safe_r)
    kernel = np.where(r == 0, omega_c**2 / (4.0 * math.pi), kernel)
    kernel = _normalise(kernel)
    if pad_to:
        kernel = pad_kernel(kernel, pad_to)
    return kernel


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a square odd kernel to ``size x size`` (odd, not smaller)."""
    _check_size(size)
    k = kernel.shape[0]
    if size < k:
        raise ValueError(f"cannot pad a {k}x{k} kernel to {size}x{size}")
    p = (size - k) // 2
    return np.pad(kernel, ((p, p), (p, p)))


def _sample_beta(rng: np.random.Generator, beta_range: tuple[float, float]) -> float:
    """Shape parameter: below or above 1 with equal probability (Real-ESRGAN's sampling), within the range."""
    lo, hi = beta_range
    if lo >= 1.0 or hi <= 1.0:
        return float(rng.uniform(lo, hi))
    if rng.uniform() < 0.5:
        return float(rng.uniform(lo, 1.0))
    return float(rng.uniform(1.0, hi))


def random_mixed_kernel(
    rng: np.random.Generator,
    kernel_types: tuple[str, ...] | list[str],
    kernel_probs: tuple[float, ...] | list[float],
    kernel_size: int,
    sigma_range: tuple[float, float],
    betag_range: tuple[float, float],
    betap_range: tuple[float, float],
    rotation_range: tuple[float, float] = (-math.pi, math.pi),
) -> tuple[np.ndarray, dict]:
    """Draw one kernel type by probability, then its parameters; returns ``(kernel, params)``.

    ``sigma_x`` (and ``sigma_y`` for anisotropic types) are uniform in ``sigma_range``, the rotation uniform in
    ``rotation_range``; isotropic types have ``sigma_y = sigma_x`` and no rotation.
    """
    probs = np.asarray(kernel_probs, dtype=np.float64)
    kind = str(kernel_types[int(rng.choice(len(kernel_types), p=probs / probs.sum()))])
    if kind not in KERNEL_TYPES:
        raise ValueError(f"unknown kernel type {kind!r}; known: {list(KERNEL_TYPES)}")
    sigma_x = float(rng.uniform(*sigma_range))
    if kind.endswith("aniso"):
        sigma_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(*rotation_range))
    else:
        sigma_y, theta = sigma_x, 0.0
    params: dict = {"type": kind, "size": kernel_size, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta}
    if kind in ("iso", "aniso"):
        kernel = gaussian_kernel(kernel_size, sigma_x, sigma_y, theta)
    elif kind.startswith("generalized"):
        beta = _sample_beta(rng, betag_range)
        params["beta"] = beta
        kernel = generalized_gaussian_kernel(kernel_size, sigma_x, sigma_y, theta, beta)
    else:
        beta = _sample_beta(rng, betap_range)
        params["beta"] = beta
        kernel = plateau_kernel(kernel_size, sigma_x, sigma_y, theta, beta)
    return kernel, params
