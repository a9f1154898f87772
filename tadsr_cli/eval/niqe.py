"""NIQE (Natural Image Quality Evaluator), no-reference, lower is better.

Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013, with the
settings the SR field reports (MATLAB release / BasicSR `calculate_niqe`): Y channel of BT.601 YCbCr (as MATLAB's
`rgb2ycbcr`) rounded to integers, no border crop, 96x96 blocks without overlap, two scales (the second made by
MATLAB bicubic `imresize(0.5)` with antialiasing), local normalisation with the 7x7 Gaussian window shipped with
the pristine model and edge replication ("nearest") at the borders, 18 features per block and scale
(AGGD fits of the normalised luminance and of its products with the 4 neighbours, circularly shifted), the
multivariate-Gaussian distance to the pristine model with the pooled covariance (pseudo-inverse).

Implemented from those facts with numpy + OpenCV; the result matches BasicSR 1.4.2 (see
`tadsr_cli/eval/data/PROVENANCE.md` and `tests/test_metrics.py`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.base.errors import InputError
from tadsr_cli.eval.matlab_resize import imresize
from tadsr_cli.eval.psnr_ssim import rgb_to_y

DATA_DIR = Path(__file__).resolve().parent / "data"
PRISTINE_FILE = DATA_DIR / "niqe_pris_params.npz"
BLOCK = 96
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass(frozen=True)
class PristineModel:
    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    window: np.ndarray  # (7, 7), sums to 1


def load_pristine(path: str | Path = PRISTINE_FILE) -> PristineModel:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: NIQE pristine parameters are missing from this installation")
    with np.load(path) as data:
        return PristineModel(
            mu=np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1),
            cov=np.asarray(data["cov_pris_param"], dtype=np.float64),
            window=np.asarray(data["gaussian_window"], dtype=np.float64),
        )


@functools.cache
def _gamma_table() -> tuple[np.ndarray, np.ndarray]:
    """The AGGD shape grid 0.2:0.001:10 and its moment ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    grid = np.arange(0.2, 10.001, 0.001)
    lg = np.vectorize(math.lgamma)
    ratio = np.exp(2 * lg(2.0 / grid) - lg(1.0 / grid) - lg(3.0 / grid))
    return grid, ratio


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching fit of an asymmetric generalised Gaussian: (shape alpha, left scale, right scale)."""
    x = x.ravel()
    grid, ratio = _gamma_table()
    neg, pos = x[x < 0], x[x > 0]
    left_std = math.sqrt(float(np.mean(neg * neg))) if neg.size else math.nan
    right_std = math.sqrt(float(np.mean(pos * pos))) if pos.size else math.nan
    gamma_hat = left_std / right_std if right_std > 0 else math.nan
    mean_sq = float(np.mean(x * x))
    r_hat = float(np.mean(np.abs(x))) ** 2 / mean_sq if mean_sq > 0 else math.nan
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    # A degenerate block (no negative or no positive values, or all zero) has no moment ratio. MATLAB's `min`
    # (and numpy's `argmin` in BasicSR) then picks the first grid point: alpha = 0.2 is kept as a feature, the
    # scales become NaN (or stay finite on the side that has values) and `nanmean` uses whatever is finite.
    alpha = float(grid[np.argmin((ratio - r_norm) ** 2)]) if math.isfinite(r_norm) else float(grid[0])
    k = math.sqrt(math.gamma(1.0 / alpha) / math.gamma(3.0 / alpha))
    return alpha, left_std * k, right_std * k


def block_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one normalised block."""
    alpha, bl, br = aggd_fit(block)
    feats = [alpha, (bl + br) / 2.0]
    for shift in _SHIFTS:
        prod = block * np.roll(block, shift, axis=(0, 1))
        alpha, bl, br = aggd_fit(prod)
        mean = (br - bl) * (math.gamma(2.0 / alpha) / math.gamma(1.0 / alpha))
        feats.extend([alpha, mean, bl, br])
    return feats


def _normalise(img: np.ndarray, window: np.ndarray, float32: bool) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (edge-replicated borders).

    The filtering itself always accumulates in float64. With `float32` the filter outputs and the arithmetic after
    them are rounded to float32, as BasicSR does (its image is float32); that rounding matters where the local
    variance is tiny (`E[x^2] - E[x]^2` cancels), and NIQE's covariance amplifies it on images with few blocks.
    """
    def filt(x: np.ndarray) -> np.ndarray:
        out = cv2.filter2D(x.astype(np.float64), cv2.CV_64F, window, borderType=cv2.BORDER_REPLICATE)
        return out.astype(np.float32) if float32 else out

    x = img.astype(np.float32) if float32 else img.astype(np.float64)
    mu = filt(x)
    sigma = np.sqrt(np.abs(filt(x * x) - mu * mu))
    return ((x - mu) / (sigma + 1)).astype(np.float64)


def niqe_y(
    y: np.ndarray, model: PristineModel | None = None, block: int = BLOCK, float32: bool = True
) -> float:
    """NIQE of a 2-D luminance image on the 0-255 scale (float; round it first for the conventional value).

    `float32=True` (default, the conventional value) rounds the local normalisation and the half-scale image to
    float32 like BasicSR 1.4.2, which it reproduces to a few 1e-3 at most. `float32=False` keeps float64 throughout,
    a diagnostic: it differs from BasicSR by ~1e-3 on images with many blocks, by up to ~0.2 on images with only
    a few, and a lot on images with flat (e.g. saturated) areas, where float64 leaves rounding noise in place of
    the exact zeros float32 produces.
    """
    model = model or load_pristine()
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise InputError(f"NIQE needs a 2-D luminance image, got shape {y.shape}")
    nh, nw = y.shape[0] // block, y.shape[1] // block
    if nh * nw < 2:
        raise InputError(
            f"image {y.shape[1]}x{y.shape[0]} is too small for NIQE (needs at least two {block}x{block} blocks)"
        )
    img = y[: nh * block, : nw * block]
    per_scale = []
    for scale in (1, 2):
        norm = _normalise(img, model.window, float32)
        size = block // scale
        feats = [
            block_features(norm[i * size : (i + 1) * size, j * size : (j + 1) * size])
            for j in range(nw)
            for i in range(nh)
        ]
        per_scale.append(np.asarray(feats, dtype=np.float64))
        if scale == 1:
            img = imresize(img / 255.0, 0.5, antialiasing=True)
            img = (img.astype(np.float32) * np.float32(255.0)) if float32 else img * 255.0
    feats = np.concatenate(per_scale, axis=1)
    mu = np.nanmean(feats, axis=0)
    clean = feats[~np.isnan(feats).any(axis=1)]
    if clean.shape[0] < 2:
        raise InputError("NIQE: fewer than two usable blocks (flat image?)")
    cov = np.cov(clean, rowvar=False)
    diff = model.mu - mu
    inv = np.linalg.pinv((model.cov + cov) / 2.0)
    return float(np.sqrt(diff @ inv @ diff))


def niqe(
    img: np.ndarray, crop_border: int = 0, model: PristineModel | None = None, float32: bool = True
) -> float:
    """NIQE of an RGB image (`HxWx3` uint8/uint16/float in [0, 1]) or a grey `HxW` image, conventional settings."""
    y = rgb_to_y(img)
    if crop_border > 0:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_y(np.round(y), model=model, float32=float32)
