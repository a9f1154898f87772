"""Synthetic LQ images for training: the Real-ESRGAN second-order degradation and plain bicubic.

Written from the Real-ESRGAN paper (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with
Pure Synthetic Data", ICCVW 2021). Default parameter values are those ResShift trains its real-SR x4 models with
(``configs/realsr_swinunet_realesrgan256.yaml``: the ``degradation:`` section and the ``data.train.params`` kernel
options); see `DegradationConfig`.

Pipeline of ``kind="realesrgan"`` on an HR crop of ``H x W`` (float32 RGB in [0, 1]), for scale ``s``:

1. first stage: blur (a random mixed kernel of odd size in ``[kernel_size_min, blur_kernel_size]``, or with
   ``sinc_prob`` a 2-D sinc) -> random resize (up / down / keep by ``resize_prob``, factor in ``resize_range``,
   area / bilinear / bicubic) -> noise (Gaussian with ``gaussian_noise_prob``, else Poisson; gray with
   ``gray_noise_prob``) -> JPEG (OpenCV codec, quality in ``jpeg_range``);
2. with ``second_order_prob``: blur (with ``second_blur_prob``) -> resize to ``(H/s, W/s) * factor`` -> noise;
3. final stage, the two orders with equal probability: [resize to ``(H//s, W//s)`` + sinc (``final_sinc_prob``,
   else identity)] -> JPEG, or JPEG -> [resize + sinc];
4. clip and round to 8-bit levels: the LQ is ``round(255 x) / 255`` as float32, exactly ``H//s x W//s``.

With ``light_prob`` (0 in Real-ESRGAN) a crop skips all that: a plain anti-aliased downscale and, with
``light_jpeg_prob``, a mild JPEG (``light_jpeg_range``), so that clean inputs keep their texture.

All randomness comes from the ``numpy.random.Generator`` passed to `degrade`, and every operation is
deterministic given its inputs (OpenCV filtering/resizing/JPEG), so one seed always gives the same LQ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tadsr_cli.pipeline.image_read import to_float01
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.image_ops import (
    add_gaussian_noise,
    add_poisson_noise,
    bicubic_downscale,
    filter_image,
    jpeg_compress,
    quantize,
    resize,
)
from tadsr_cli.train.kernels import random_mixed_kernel, sinc_kernel


def _odd_sizes(lo: int, hi: int) -> list[int]:
    return list(range(lo, hi + 1, 2))


def _random_blur_kernel(
    rng: np.random.Generator, cfg: DegradationConfig, second: bool
) -> tuple[np.ndarray, dict]:
    sfx = "2" if second else ""
    size = int(rng.choice(_odd_sizes(cfg.kernel_size_min, getattr(cfg, f"blur_kernel_size{sfx}"))))
    if rng.uniform() < getattr(cfg, f"sinc_prob{sfx}"):
        # cut-off range of Real-ESRGAN for kernel sizes 7..21: small kernels keep omega_c >= pi/3
        omega = float(rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi))
        return sinc_kernel(size, omega), {"type": "sinc", "size": size, "omega_c": omega}
    return random_mixed_kernel(
        rng,
        getattr(cfg, f"kernel_list{sfx}"),
        getattr(cfg, f"kernel_prob{sfx}"),
        size,
        getattr(cfg, f"blur_sigma{sfx}"),
        getattr(cfg, f"betag_range{sfx}"),
        getattr(cfg, f"betap_range{sfx}"),
    )


def _random_scale(
    rng: np.random.Generator, probs: tuple[float, ...], scale_range: tuple[float, float]
) -> tuple[str, float]:
    p = np.asarray(probs, dtype=np.float64)
    direction = ("up", "down", "keep")[int(rng.choice(3, p=p / p.sum()))]
    if direction == "up":
        return direction, float(rng.uniform(1.0, scale_range[1]))
    if direction == "down":
        return direction, float(rng.uniform(scale_range[0], 1.0))
    return direction, 1.0


def _random_mode(rng: np.random.Generator, cfg: DegradationConfig) -> str:
    return str(cfg.resize_modes[int(rng.integers(len(cfg.resize_modes)))])


def _random_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    cfg: DegradationConfig,
    second: bool,
    log: dict | None,
    tag: str,
) -> np.ndarray:
    sfx = "2" if second else ""
    gaussian = rng.uniform() < getattr(cfg, f"gaussian_noise_prob{sfx}")
    if gaussian:
        sigma = float(rng.uniform(*getattr(cfg, f"noise_range{sfx}")))
        gray = bool(rng.uniform() < getattr(cfg, f"gray_noise_prob{sfx}"))
        if log is not None:
            log[tag] = {"type": "gaussian", "sigma": sigma, "gray": gray}
        return add_gaussian_noise(img, rng, sigma, gray)
    scale = float(rng.uniform(*getattr(cfg, f"poisson_scale_range{sfx}")))
    gray = bool(rng.uniform() < getattr(cfg, f"gray_noise_prob{sfx}"))
    if log is not None:
        log[tag] = {"type": "poisson", "scale": scale, "gray": gray}
    return add_poisson_noise(img, rng, scale, gray)


def _random_jpeg(
    img: np.ndarray, rng: np.random.Generator, qrange: tuple[float, float]
) -> tuple[np.ndarray, int]:
    quality = int(round(float(rng.uniform(*qrange))))
    return jpeg_compress(img, quality), quality


def realesrgan_degrade(
    hr: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig, log: dict | None = None
) -> np.ndarray:
    """Real-ESRGAN second-order degradation (module docstring); ``log``, when given, receives the drawn parameters."""
    img = to_float01(hr)
    ori_h, ori_w = img.shape[:2]
    sf = cfg.scale
    out_h, out_w = ori_h // sf, ori_w // sf
    if out_h < 1 or out_w < 1:
        raise ValueError(f"image {ori_h}x{ori_w} is smaller than the scale {sf}")
    # Drawn only when enabled, so that recipes without it keep their exact random streams.
    if cfg.light_prob > 0.0 and rng.uniform() < cfg.light_prob:
        return _light_degrade(img, rng, cfg, (out_h, out_w), log)

    # ---------------- first stage
    kernel, kparams = _random_blur_kernel(rng, cfg, second=False)
    out = filter_image(img, kernel)
    direction, factor = _random_scale(rng, cfg.resize_prob, cfg.resize_range)
    mode = _random_mode(rng, cfg)
    out = resize(out, (int(ori_h * factor), int(ori_w * factor)), mode)
    if log is not None:
        log["blur1"] = kparams
        log["resize1"] = {"direction": direction, "factor": factor, "mode": mode, "size": out.shape[:2]}
    out = _random_noise(out, rng, cfg, second=False, log=log, tag="noise1")
    out, quality = _random_jpeg(out, rng, cfg.jpeg_range)
    if log is not None:
        log["jpeg1"] = quality

    # ---------------- second stage
    second = bool(rng.uniform() < cfg.second_order_prob)
    if log is not None:
        log["second_order"] = second
    if second:
        if rng.uniform() < cfg.second_blur_prob:
            kernel2, kparams2 = _random_blur_kernel(rng, cfg, second=True)
            out = filter_image(out, kernel2)
            if log is not None:
                log["blur2"] = kparams2
        direction, factor = _random_scale(rng, cfg.resize_prob2, cfg.resize_range2)
        mode = _random_mode(rng, cfg)
        out = resize(out, (int(ori_h / sf * factor), int(ori_w / sf * factor)), mode)
        if log is not None:
            log["resize2"] = {"direction": direction, "factor": factor, "mode": mode, "size": out.shape[:2]}
        out = _random_noise(out, rng, cfg, second=True, log=log, tag="noise2")

    # ---------------- final stage: [resize back + sinc] and JPEG, in random order
    if rng.uniform() < cfg.final_sinc_prob:
        size = int(rng.choice(_odd_sizes(cfg.kernel_size_min, cfg.blur_kernel_size2)))
        omega = float(rng.uniform(math.pi / 3, math.pi))
        final_kernel = sinc_kernel(size, omega)
        final_params: dict = {"type": "sinc", "size": size, "omega_c": omega}
    else:
        final_kernel = np.ones((1, 1))
        final_params = {"type": "none"}
    resize_first = bool(rng.uniform() < cfg.final_resize_first_prob)
    mode = _random_mode(rng, cfg)
    if resize_first:
        out = filter_image(resize(out, (out_h, out_w), mode), final_kernel)
        out, quality = _random_jpeg(out, rng, cfg.jpeg_range2)
    else:
        out, quality = _random_jpeg(out, rng, cfg.jpeg_range2)
        out = filter_image(resize(out, (out_h, out_w), mode), final_kernel)
    if log is not None:
        log["final"] = {"sinc": final_params, "resize_first": resize_first, "mode": mode, "jpeg": quality}
    return quantize(out)


def _light_degrade(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig, size: tuple[int, int],
                   log: dict | None) -> np.ndarray:
    """A clean input: an anti-aliased downscale (area or bicubic, as cameras and video scalers make), then with
    `light_jpeg_prob` a mild JPEG."""
    mode = "area" if rng.uniform() < 0.5 else "bicubic-aa"
    out = resize(img, size, "area") if mode == "area" else bicubic_downscale(img, cfg.scale)[: size[0], : size[1]]
    quality = None
    if rng.uniform() < cfg.light_jpeg_prob:
        out, quality = _random_jpeg(out, rng, cfg.light_jpeg_range)
    if log is not None:
        log["light"] = {"mode": mode, "jpeg": quality}
    return quantize(out)


def bicubic_degrade(hr: np.ndarray, cfg: DegradationConfig) -> np.ndarray:
    """Plain anti-aliased bicubic ``1/scale`` (`bicubic_downscale`), rounded to 8-bit levels."""
    return quantize(bicubic_downscale(to_float01(hr), cfg.scale))


def degrade(
    hr: np.ndarray,
    rng: np.random.Generator,
    cfg: DegradationConfig | Mapping[str, Any] | None = None,
    log: dict | None = None,
) -> np.ndarray:
    """HR (HxWx3 RGB, uint8 or float32 in [0, 1]) -> LQ float32 ``(H//scale) x (W//scale) x 3`` on 8-bit levels.

    Deterministic: the same ``rng`` state and input give the same output. ``cfg`` may be a `DegradationConfig`, a
    recipe mapping or None (ResShift defaults).
    """
    if not isinstance(cfg, DegradationConfig):
        cfg = DegradationConfig.from_dict(cfg)
    if cfg.kind == "bicubic":
        if log is not None:
            log["light"] = {"mode": "bicubic-aa", "jpeg": None}  # a clean input, as `light_prob` makes
        return bicubic_degrade(hr, cfg)
    return realesrgan_degrade(hr, rng, cfg, log=log)
