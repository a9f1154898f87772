"""Command-line options declared once, and the decorator that gives a command one `RunSettings` built from them.

`upscale`, `batch` and `eval` share these definitions; `@with_options(GROUP, build)` appends a group's options to a
command's own parameters and calls it with `settings=build(values)`. Old and Real-ESRGAN spellings are hidden
aliases (`--json-progress`, `--model_name`, `--tile_pad`, `--face_enhance`), merged in `build_run_settings`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.pipeline.batch import DEFAULT_NAME
from tadsr_cli.pipeline.color_fix import COLOR_FIXES, DEFAULT_COLOR_FIX
from tadsr_cli.pipeline.image_io import ImageOptions
from tadsr_cli.pipeline.image_read import DEFAULT_MAX_PIXELS
from tadsr_cli.pipeline.settings import (
    BLENDS,
    PRECISIONS,
    SAMPLERS,
    VIDEO_TEMPORAL_SMOOTHING,
    ModelSettings,
    OutputSettings,
    RunSettings,
)
from tadsr_cli.pipeline.upscaler import TileOptions


@dataclass(frozen=True)
class OptionDef:
    """One option: its parameter name, Python type and Typer declaration (default, spellings, help)."""

    name: str
    annotation: Any
    info: Any  # typer.Option(...)


def _opt(name: str, annotation: Any, default: Any, *decls: str, **kw: Any) -> OptionDef:
    return OptionDef(name, annotation, typer.Option(default, *decls, **kw))


def _hidden(name: str, annotation: Any, default: Any, *decls: str) -> OptionDef:
    return _opt(name, annotation, default, *decls, hidden=True)


# ---- the engine and its tiles (upscale, batch, eval) ------------------------------------------------------------
ENGINE_OPTIONS: tuple[OptionDef, ...] = (
    _opt("backend", str, ModelSettings.backend, "--backend",
         help="Inference backend: auto (on the CPU the fastest of torch, OpenVINO and ONNX Runtime, measured once "
              "per model and machine), torch, openvino, onnx or tensorrt."),
    _opt("device", str, ModelSettings.device, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    _opt("precision", str, ModelSettings.precision, "--precision",
         help=f"{', '.join(PRECISIONS)}. auto: bf16 for the one-step model on a CPU with native bf16 (measured "
              "faster, >= 40 dB from fp32), else fp32. NaN/Inf tiles are redone in fp32."),
    _opt("fp32", bool, False, "--fp32", help="Same as --precision fp32 (Real-ESRGAN's spelling)."),
    _opt("seed", int, ModelSettings.seed, "--seed", help="Seed of the prior noise field (same seed = same output)."),
    _opt("noise_scale", float | None, None, "--noise-scale", min=0.0, max=4.0,
         help="Temperature of the prior noise, x the model's own: lower follows the input more (less invented "
              "texture, less flicker), higher adds detail. Default: 1 for images, 0.5 for video."),
    _opt("temporal_smoothing", float, VIDEO_TEMPORAL_SMOOTHING, "--temporal-smoothing", min=0.0, max=0.95,
         help="Video: blend each frame with the previous output, motion-compensated (0 = off; higher = steadier, "
              "softer). Pixels whose motion is uncertain and scene cuts take the fresh frame only."),
    _opt("sampler", str, ModelSettings.sampler, "--sampler",
         help=f"Teacher sampler (--steps T): {' or '.join(SAMPLERS)}."),
    _opt("tile", str, TileOptions.tile, "--tile", "-t",
         help="auto (the whole image when it fits in memory, else the largest tile that fits), 0 (whole image) "
              "or a tile size in input pixels (tiles share whole-image statistics: same result as 0)."),
    _opt("tile_overlap", int, TileOptions.overlap, "--tile-overlap", min=0,
         help="Tile overlap in input pixels (blended with a cosine ramp). Real-ESRGAN's --tile_pad P = overlap 2P."),
    _hidden("tile_pad", int | None, None, "--tile_pad"),
    _opt("tile_batch", int, TileOptions.batch, "--tile-batch", min=1, max=1024, help="Tiles per model call."),
    _opt("blend", str, TileOptions.blend, "--blend", help=f"Tile blend weights: {' or '.join(BLENDS)}."),
    _opt("color_fix", str, DEFAULT_COLOR_FIX, "--color-fix",
         help=f"{', '.join(COLOR_FIXES)}: match the output's low frequencies (colour) to the input's, on the "
              "whole image after the model."),
)

# ---- files: model, naming, formats, progress, video (upscale, batch) -----------------------------------------
FILE_OPTIONS: tuple[OptionDef, ...] = (
    _opt("model", str | None, None, "--model", "-m",
         help="Model name (see `tadsr models list`; `default` = the embedded model) or .safetensors file."),
    _hidden("model_name", str | None, None, "--model_name", "-n"),
    _opt("steps", int | None, None, "--steps", min=1,
         help="1 = one-step student; the model's T = teacher sampling. Default: what the model is meant for."),
    _opt("outscale", float | None, None, "--outscale", "-s", min=0, max=64,
         help="Final size / input size for images (resize after the model)."),
    _opt("ext", str | None, None, "--ext",
         help="Output image format: png, jpg, webp, tif, bmp, or auto (the input's; the default)."),
    _opt("jpeg_quality", int, ImageOptions.jpeg_quality, "--jpeg-quality", min=1, max=100,
         help="JPEG/WebP quality, 1-100."),
    _opt("max_pixels", int, DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse input images with more pixels."),
    _opt("name", str, DEFAULT_NAME, "--name", help="Output file name template: {stem}, {ext}, {scale}."),
    _opt("suffix", str | None, None, "--suffix", help="Name outputs {stem}_SUFFIX.{ext} (Real-ESRGAN's naming)."),
    _opt("overwrite", bool, False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    _opt("quiet", bool, False, "--quiet", "-q", help="No progress output (errors are still shown)."),
    _opt("json", bool, False, "--json",
         help="One JSON object per line on stdout (for front-ends); also spelled --json-progress."),
    _hidden("json_progress", bool, False, "--json-progress"),
    _hidden("face_enhance", bool, False, "--face_enhance"),
    _opt("codec", str, "auto", "--codec", help="Video encoder: auto (libx264; VP9 for .webm), libx264, libx265, "
         "libsvtav1, ..."),
    _opt("crf", int, 18, "--crf", min=0, max=63, help="Video quality (constant rate factor; lower = better)."),
    _opt("preset", str, "medium", "--preset", help="Video encoder preset."),
    _opt("pix_fmt", str, "yuv420p", "--pix-fmt", help="Video pixel format (yuv420p, yuv420p10le, auto, ...)."),
    _opt("max_frames", int | None, None, "--max-frames", min=1, help="Video: stop after N frames (previews)."),
    _opt("allow_partial", bool, False, "--allow-partial", help="Video: upscale the readable part of a damaged file."),
)

RUN_OPTIONS = ENGINE_OPTIONS + FILE_OPTIONS
VIDEO_FIELDS = ("codec", "crf", "preset", "pix_fmt", "max_frames", "allow_partial")  # -> VideoOptions


def _precision(values: dict[str, Any]) -> str:
    if values["fp32"]:
        if values["precision"] not in ("auto", "fp32"):
            raise ConfigError(f"--fp32 contradicts --precision {values['precision']}")
        return "fp32"
    return str(values["precision"])


def _overlap(values: dict[str, Any]) -> int:
    pad = values["tile_pad"]
    if pad is None:
        return int(values["tile_overlap"])
    if pad < 0:
        raise ConfigError("--tile_pad must be >= 0")
    return 2 * int(pad)  # Real-ESRGAN pads each tile by P on every side: neighbours share 2P input pixels


def engine_settings(values: dict[str, Any], model: str | None = None, steps: int | None = None) -> RunSettings:
    """RunSettings from ENGINE_OPTIONS values (what `eval` shares with `upscale`), checked."""
    return RunSettings(
        model=ModelSettings(model=model, backend=values["backend"], device=values["device"],
                            precision=_precision(values), seed=values["seed"], steps=steps,
                            sampler=values["sampler"], noise_scale=values["noise_scale"]),
        tiles=TileOptions(tile=values["tile"], overlap=_overlap(values), batch=values["tile_batch"],
                          blend=values["blend"]),
        color_fix=values["color_fix"],
        temporal_smoothing=values["temporal_smoothing"],
    ).validate()


def _name(values: dict[str, Any]) -> str:
    suffix = values["suffix"]
    if suffix is None:
        return str(values["name"])
    if values["name"] != DEFAULT_NAME:
        raise ConfigError("--suffix and --name both name the outputs; give one")
    return "{stem}_" + suffix if suffix else "{stem}"


def build_run_settings(values: dict[str, Any]) -> RunSettings:
    """RunSettings from RUN_OPTIONS values (aliases merged, Real-ESRGAN spellings translated), checked."""
    if values["face_enhance"]:
        raise ConfigError("--face_enhance is not supported: tadsr has no face restoration model; run without it")
    model = values["model"] if values["model_name"] is None else values["model_name"]
    settings = engine_settings(values, model=model, steps=values["steps"])
    settings.image = ImageOptions(outscale=values["outscale"], jpeg_quality=values["jpeg_quality"],
                                  max_pixels=values["max_pixels"])
    settings.video = {key: values[key] for key in VIDEO_FIELDS}
    settings.output = OutputSettings(name=_name(values), ext=values["ext"], overwrite=values["overwrite"])
    json_mode = values["json"] or values["json_progress"]
    settings.progress = "json" if json_mode else ("quiet" if values["quiet"] else "auto")
    return settings.validate()


def with_options(options: tuple[OptionDef, ...], build: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """Decorator: the command gets `options` on its command line and is called with `settings=build(values)`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(func).parameters.values() if p.name != "settings"]
        added = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.info, annotation=o.annotation)
                 for o in options]
        names = {o.name for o in options}

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return func(**kwargs, settings=build(values))

        params = own + added
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
