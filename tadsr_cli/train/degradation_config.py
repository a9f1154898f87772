"""`DegradationConfig`: the parameters of the synthetic training degradation, read from a recipe and checked."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tadsr_cli.base import typecheck
from tadsr_cli.base.errors import RecipeError
from tadsr_cli.train.image_ops import RESIZE_MODES
from tadsr_cli.train.kernels import KERNEL_TYPES

DEGRADATION_KINDS: tuple[str, ...] = ("realesrgan", "bicubic")
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

    # ---- not in Real-ESRGAN: a share of clean inputs. Trained only on heavy degradations, a model takes the fine
    # texture of a clean input (sand, foliage, a sharp video frame) for noise and wipes it out; with probability
    # `light_prob` a crop is instead just downscaled (area or anti-aliased bicubic, at random) and, with `light_jpeg_prob`,
    # JPEG-compressed at a quality in `light_jpeg_range`.
    light_prob: float = 0.0
    light_jpeg_prob: float = 0.5
    light_jpeg_range: tuple[float, float] = (75.0, 95.0)

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
        unknown = sorted(typecheck.unknown_keys(cls, data))
        if unknown:
            raise RecipeError(
                f"{where}: unknown key(s) {', '.join(repr(u) for u in unknown)}; "
                f"known keys: {', '.join(sorted(typecheck.field_names(cls)))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            try:  # ints to floats, lists to tuples; a YAML 1.1 '5e-5' string is a number
                kwargs[key] = typecheck.convert(value, hints[key], (key,), numeric_strings=True)
            except typecheck.Mismatch as exc:
                raise RecipeError(f"{where}.{exc}") from None
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
            "light_prob",
            "light_jpeg_prob",
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
        for key in positive_ranges + ("noise_range", "noise_range2", "jpeg_range", "jpeg_range2", "light_jpeg_range"):
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
        for key in ("jpeg_range", "jpeg_range2", "light_jpeg_range"):
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
