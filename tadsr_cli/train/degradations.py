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

All randomness comes from the ``numpy.random.Generator`` passed to `degrade`, and every operation is
deterministic given its inputs (OpenCV filtering/resizing/JPEG), so one seed always gives the same LQ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from tadsr_cli.base.errors import RecipeError
from tadsr_cli.pipeline.image_read import to_float01
from tadsr_cli.train.kernels import KERNEL_TYPES, random_mixed_kernel, sinc_kernel

DEGRADATION_KINDS: tuple[str, ...] = ("realesrgan", "bicubic")
RESIZE_MODES: dict[str, int] = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}
_ALL_KERNELS = list(KERNEL_TYPES)
_ALL_KERNEL_PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


def _tuple(default: list) -> Any:
    return dataclasses.field(default_factory=lambda: tuple(default))


@dataclass
class DegradationConfig:
    """Parameters of the synthetic degradation; names follow ResShift's/Real-ESRGAN's config keys.

    Defaults: ResShift ``configs/realsr_swinunet_realesrgan256.yaml`` (``degradation:`` and the kernel options of
    ``data.train.params``). Three values are fixed in code there and exposed here: ``kernel_size_min`` (Real-ESRGAN
    draws odd kernel sizes 7..21), ``resize_modes`` and ``final_resize_first_prob`` (the two final orders are
    equally likely). ``kind="bicubic"`` ignores everything but ``scale``.
    """

    kind: str = "realesrgan"
    scale: int = 4

    # ---- first degradation stage: blur
    blur_kernel_size: int = 21
    kernel_list: tuple[str, ...] = _tuple(_ALL_KERNELS)
    kernel_prob: tuple[float, ...] = _tuple(_ALL_KERNEL_PROBS)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    # ---- first stage: resize, noise, JPEG
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma, in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    # ---- second degradation stage
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    blur_kernel_size2: int = 15
    kernel_list2: tuple[str, ...] = _tuple(_ALL_KERNELS)
    kernel_prob2: tuple[float, ...] = _tuple(_ALL_KERNEL_PROBS)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)  # the final JPEG

    # ---- final stage
    final_sinc_prob: float = 0.8
    final_resize_first_prob: float = 0.5  # P([resize + sinc] -> JPEG); otherwise JPEG -> [resize + sinc]

    # ---- fixed in ResShift / Real-ESRGAN code
    kernel_size_min: int = 7
    resize_modes: tuple[str, ...] = _tuple(["area", "bilinear", "bicubic"])

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction and checks
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "degradation") -> DegradationConfig:
        """Build from a recipe's ``degradation:`` mapping; unknown keys and wrong types raise `RecipeError`."""
        if data is None:
            return cls()
        if isinstance(data, DegradationConfig):
            return data
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise RecipeError(
                f"{where}: unknown key(s) {', '.join(repr(u) for u in unknown)}; known keys: {', '.join(sorted(fields))}"
            )
        defaults = cls()
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kwargs[key] = _coerce(f"{where}.{key}", value, getattr(defaults, key))
        try:
            return cls(**kwargs)
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON-ready) mapping; ``from_dict(to_dict())`` round-trips."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> None:
        """Raise `RecipeError` naming the first inconsistent key."""
        if self.kind not in DEGRADATION_KINDS:
            raise RecipeError(f"kind: must be one of {list(DEGRADATION_KINDS)}, got {self.kind!r}")
        if not isinstance(self.scale, int) or self.scale < 1:
            raise RecipeError(f"scale: must be a positive integer, got {self.scale!r}")
        if (
            not isinstance(self.kernel_size_min, int)
            or self.kernel_size_min < 1
            or self.kernel_size_min % 2 == 0
        ):
            raise RecipeError(
                f"kernel_size_min: must be a positive odd integer, got {self.kernel_size_min!r}"
            )
        for key in ("blur_kernel_size", "blur_kernel_size2"):
            size = getattr(self, key)
            if not isinstance(size, int) or size % 2 == 0 or size < self.kernel_size_min:
                raise RecipeError(
                    f"{key}: must be an odd integer >= kernel_size_min ({self.kernel_size_min}), got {size!r}"
                )
        for lst_key, prob_key in (("kernel_list", "kernel_prob"), ("kernel_list2", "kernel_prob2")):
            kinds, probs = getattr(self, lst_key), getattr(self, prob_key)
            bad = [k for k in kinds if k not in KERNEL_TYPES]
            if not kinds or bad:
                raise RecipeError(
                    f"{lst_key}: kernel types must be among {list(KERNEL_TYPES)}, got {list(kinds)}"
                )
            if len(probs) != len(kinds):
                raise RecipeError(
                    f"{prob_key}: needs {len(kinds)} probabilities (one per {lst_key} entry), got {len(probs)}"
                )
            _check_distribution(prob_key, probs)
        for key in ("resize_prob", "resize_prob2"):
            probs = getattr(self, key)
            if len(probs) != 3:
                raise RecipeError(f"{key}: needs 3 probabilities (up, down, keep), got {len(probs)}")
            _check_distribution(key, probs)
        for key in (
            "sinc_prob",
            "sinc_prob2",
            "gaussian_noise_prob",
            "gaussian_noise_prob2",
            "gray_noise_prob",
            "gray_noise_prob2",
            "second_order_prob",
            "second_blur_prob",
            "final_sinc_prob",
            "final_resize_first_prob",
        ):
            p = getattr(self, key)
            if not 0.0 <= p <= 1.0:
                raise RecipeError(f"{key}: must be a probability in [0, 1], got {p!r}")
        positive_ranges = (
            "blur_sigma",
            "blur_sigma2",
            "betag_range",
            "betag_range2",
            "betap_range",
            "betap_range2",
            "resize_range",
            "resize_range2",
            "poisson_scale_range",
            "poisson_scale_range2",
        )
        for key in positive_ranges + ("noise_range", "noise_range2", "jpeg_range", "jpeg_range2"):
            rng = getattr(self, key)
            if len(rng) != 2 or not rng[0] <= rng[1]:
                raise RecipeError(f"{key}: must be [low, high] with low <= high, got {list(rng)}")
            if key in positive_ranges and rng[0] <= 0:
                raise RecipeError(f"{key}: values must be positive, got {list(rng)}")
            if key.startswith("noise_range") and rng[0] < 0:
                raise RecipeError(f"{key}: values must be >= 0, got {list(rng)}")
        for key in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, key)
            if lo > 1.0 or hi < 1.0:
                raise RecipeError(
                    f"{key}: must contain 1 (down-scales below 1, up-scales above), got {[lo, hi]}"
                )
        for key in ("jpeg_range", "jpeg_range2"):
            lo, hi = getattr(self, key)
            if lo < 1 or hi > 100:
                raise RecipeError(f"{key}: JPEG quality must be within [1, 100], got {[lo, hi]}")
        bad_modes = [m for m in self.resize_modes if m not in RESIZE_MODES]
        if not self.resize_modes or bad_modes:
            raise RecipeError(
                f"resize_modes: must be among {list(RESIZE_MODES)}, got {list(self.resize_modes)}"
            )


def _check_distribution(key: str, probs: tuple[float, ...]) -> None:
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-3:
        raise RecipeError(f"{key}: probabilities must be >= 0 and sum to 1, got {list(probs)}")


def _coerce(where: str, value: Any, default: Any) -> Any:
    """Convert a YAML value to the type of the default (ints to floats, lists to tuples); refuse other types."""

    def number(v: Any, want: type) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise RecipeError(f"{where}: expected a number, got {v!r}")
        if want is int:
            if isinstance(v, float) and not v.is_integer():
                raise RecipeError(f"{where}: expected an integer, got {v!r}")
            return int(v)
        return float(v)

    if isinstance(default, str):
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        if default and isinstance(default[0], str):
            if not all(isinstance(v, str) for v in value):
                raise RecipeError(f"{where}: expected a list of strings, got {value!r}")
            return tuple(value)
        return tuple(number(v, float) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        return number(value, int)
    if isinstance(default, float):
        return number(value, float)
    return value


# ---------------------------------------------------------------------------------------------------------------
# elementary operations (float32 HxWx3 RGB, nominally in [0, 1])
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# the random pipeline
# ---------------------------------------------------------------------------------------------------------------


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
        return bicubic_degrade(hr, cfg)
    return realesrgan_degrade(hr, rng, cfg, log=log)
