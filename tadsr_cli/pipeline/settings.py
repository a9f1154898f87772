"""The settings of an upscaling run (model, engine, tiles, image, video, output, colour fix), checked in one place.

`upscale`, `batch` and `eval` build these objects from their options and pass them down whole; every choice
(precision, sampler, blend, colour fix, output format) is checked here, with one-line `ConfigError`s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.models.catalog import model_name
from tadsr_cli.pipeline.batch import DEFAULT_NAME, check_template, video_extensions
from tadsr_cli.pipeline.color_fix import COLOR_FIXES, DEFAULT_COLOR_FIX
from tadsr_cli.pipeline.image_io import ImageOptions, normalize_ext
from tadsr_cli.pipeline.upscaler import TileOptions

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SAMPLERS = ("deterministic", "ancestral")
BLENDS = ("cosine", "gaussian")
PROGRESS_MODES = ("auto", "rich", "lines", "json", "quiet")  # auto: rich bars on a terminal, else plain lines


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """`value` lower-cased when it is one of `choices`, else a `ConfigError` naming the option and the choices."""
    choices = tuple(choices)
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{option} {value!r}: choose one of {', '.join(choices)}")
    return text


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, backend: str, steps: int) -> str:
    """`auto` -> bf16 for the one-step torch or OpenVINO engine on a CPU with native bf16, else fp32.

    Measured by `benchmarks/bench_precision.py` on the shipped model (README): bf16 is faster there and its
    output stays >= 40 dB from fp32's. Teacher sampling (steps > 1) and other devices/backends stay fp32 until
    measured.
    """
    if precision != "auto":
        return precision
    if backend in ("torch", "auto", "openvino") and device.type == "cpu" and steps == 1 and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


# Temperature of the prior noise on top of the model's own `prior_noise_scale`. Video takes half: the noise field
# stays fixed on screen while the content moves, so noise-driven texture flickers; images keep 1 (on the held-out
# photos 0.5 cost 0.03 ST-LPIPS). Measured by benchmarks/bench_video_stability.py (README, "Video").
IMAGE_NOISE_SCALE = 1.0
VIDEO_NOISE_SCALE = 0.5
# Motion-compensated blending of each video frame with the previous output (`pipeline.temporal_filter`), on top of
# the halved noise. With both, the video default on a camera pan over three held-out photos flickers less than the
# original frames (warping error 2.15 / 0.42 / 0.36 against 3.43 / 1.37 / 0.46; frames on their own 5.84 / 1.03 /
# 0.74) at slightly higher PSNR-Y; with the image default, 0.5 left two clips above the original's flicker
# (README, "Video").
VIDEO_TEMPORAL_SMOOTHING = 0.7


@dataclass
class ModelSettings:
    """Which model runs, on what, how: shared by `upscale`, `batch` and `eval`."""

    model: str | None = None  # None / "default": the embedded default for the input's kind (`model_for`)
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    steps: int | None = None  # None: what the model is meant for
    sampler: str = "deterministic"
    noise_scale: float | None = None  # None (auto): IMAGE_NOISE_SCALE for images, VIDEO_NOISE_SCALE for video

    def model_for(self, kind: str) -> str:
        """The model name or file that runs an "image" or a "video" input."""
        return model_name(self.model, kind)

    def noise_scale_for(self, kind: str) -> float:
        """The prior-noise temperature (x the model's own) for an image or a video."""
        if self.noise_scale is not None:
            return float(self.noise_scale)
        return VIDEO_NOISE_SCALE if kind == "video" else IMAGE_NOISE_SCALE

    def validate(self) -> None:
        if self.noise_scale is not None and not 0.0 <= self.noise_scale <= 4.0:
            raise ConfigError(f"--noise-scale must be in [0, 4], got {self.noise_scale}")
        self.precision = check_choice("--precision", self.precision, PRECISIONS)
        self.sampler = check_choice("--sampler", self.sampler, SAMPLERS)
        if self.steps is not None and self.steps < 1:
            raise ConfigError("--steps must be >= 1")


@dataclass
class OutputSettings:
    """How output files are named and whether existing ones are replaced."""

    name: str = DEFAULT_NAME  # template: {stem}, {ext}, {scale}
    ext: str | None = None  # ".png", ...; None: the input's
    overwrite: bool = False

    def validate(self) -> None:
        check_template(self.name)
        if self.ext is not None:
            text = self.ext.strip().lower()
            container = "." + text.lstrip(".")  # a video container (mkv, mov, mp4, webm, ...) applies to videos
            self.ext = None if text == "auto" else container if container in video_extensions() \
                else normalize_ext(self.ext)


@dataclass
class RunSettings:
    """Everything one `upscale` / `batch` run needs; built once by the command, then passed down whole."""

    model: ModelSettings = field(default_factory=ModelSettings)
    tiles: TileOptions = field(default_factory=TileOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    video: dict[str, Any] = field(default_factory=dict)  # `pipeline.video.VideoOptions` fields
    output: OutputSettings = field(default_factory=OutputSettings)
    color_fix: str = DEFAULT_COLOR_FIX
    temporal_smoothing: float = VIDEO_TEMPORAL_SMOOTHING  # video only; 0 = every frame on its own
    progress: str = "auto"

    def validate(self) -> RunSettings:
        self.model.validate()
        if not 0.0 <= self.temporal_smoothing <= 0.95:
            raise ConfigError(f"--temporal-smoothing must be in [0, 0.95], got {self.temporal_smoothing}")
        self.tiles.blend = check_choice("--blend", self.tiles.blend, BLENDS)  # type: ignore[assignment]
        self.tiles.validate()
        self.image.validate()
        self.output.validate()
        self.color_fix = check_choice("--color-fix", self.color_fix, COLOR_FIXES)
        self.progress = check_choice("progress mode", self.progress, PROGRESS_MODES)
        return self
