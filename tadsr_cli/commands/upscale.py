"""`tadsr upscale FILE...` (images and videos) and `tadsr batch DIR -o OUT` (a folder tree)."""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from tadsr_cli.base.errors import ConfigError, InputError, ModelNotFoundError
from tadsr_cli.pipeline.batch import (
    DEFAULT_NAME,
    FileResult,
    Interrupted,
    Job,
    check_template,
    output_name,
    parse_shard,
    plan_folder,
    run_jobs,
    select_shard,
    sigterm_as_interrupt,
    video_extensions,
)
from tadsr_cli.pipeline.image_io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageOptions,
    normalize_ext,
    output_format,
)
from tadsr_cli.pipeline.paths import check_input_folder, ensure_output_folder
from tadsr_cli.pipeline.progress import Reporter
from tadsr_cli.pipeline.upscaler import TileOptions

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLERS = ("deterministic", "ancestral")


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale_command)
    app.command("batch")(batch_command)


# ---- shared options -------------------------------------------------------------------------------------------
MODEL = typer.Option(None, "--model", "-m", help="Model name (see `tadsr models list`) or .safetensors file. "
                     "Default: the embedded model.")
BACKEND = typer.Option("torch", "--backend", help="Inference backend: torch, onnx or tensorrt.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
PRECISION = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (NaN/Inf tiles are redone in fp32).")
SEED = typer.Option(0, "--seed", help="Seed of the prior noise field (same seed = same output).")
STEPS = typer.Option(None, "--steps", min=1, help="1 = one-step student; the model's T = teacher sampling. "
                     "Default: what the model is meant for.")
SAMPLER = typer.Option("deterministic", "--sampler", help="Teacher sampler (--steps T): deterministic or ancestral.")
TILE = typer.Option(128, "--tile", min=0,
                    help="Tile size in input pixels (0 = whole image; halved on GPU out-of-memory).")
OVERLAP = typer.Option(16, "--tile-overlap", min=0,
                       help="Tile overlap in input pixels (blended with a cosine ramp).")
TILE_BATCH = typer.Option(4, "--tile-batch", min=1, max=1024, help="Tiles per model call.")
BLEND = typer.Option("cosine", "--blend", help="Tile blend weights: cosine or gaussian.")
OUTSCALE = typer.Option(None, "--outscale", min=0, max=64,
                        help="Final size / input size for images (resize after the model).")
EXT = typer.Option(None, "--ext", help="Output image format: png, jpg, webp, tif, bmp (default: the input's).")
JPEG_QUALITY = typer.Option(95, "--jpeg-quality", min=1, max=100, help="JPEG/WebP quality, 1-100.")
MAX_PIXELS = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse input images with more pixels.")
NAME = typer.Option(DEFAULT_NAME, "--name", help="Output file name template: {stem}, {ext}, {scale}.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress output (errors are still shown).")
JSON_PROGRESS = typer.Option(False, "--json-progress", help="One JSON object per line on stdout (for front-ends).")
CODEC = typer.Option("libx264", "--codec", help="Video encoder (libx264, libx265, libsvtav1, ...).")
CRF = typer.Option(18, "--crf", min=0, max=63, help="Video quality (constant rate factor; lower = better).")
PRESET = typer.Option("medium", "--preset", help="Video encoder preset.")
PIX_FMT = typer.Option("yuv420p", "--pix-fmt", help="Video pixel format (yuv420p, yuv420p10le, auto, ...).")
MAX_FRAMES = typer.Option(None, "--max-frames", min=1, help="Video: stop after N frames (previews).")
ALLOW_PARTIAL = typer.Option(False, "--allow-partial", help="Video: upscale the readable part of a damaged file.")


@dataclass
class RunSettings:
    model: str | None
    backend: str
    device: str
    precision: str
    seed: int
    steps: int | None
    sampler: str
    tiles: TileOptions
    image: ImageOptions
    video: dict[str, Any]
    name: str
    ext: str | None
    overwrite: bool
    quiet: bool
    json_progress: bool

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        self.tiles.validate()
        self.image.validate()
        check_template(self.name)
        if self.ext is not None:
            self.ext = normalize_ext(self.ext)


class Session:
    """Model header first (cheap, validates --model and --steps), the model and engine on first real work."""

    def __init__(self, s: RunSettings) -> None:
        self.s = s
        self.upscaler: Any = None
        try:
            from tadsr_cli.models import registry
            from tadsr_cli.models.checkpoints import read_model_config
        except ImportError as exc:  # pragma: no cover - partial installs
            raise ModelNotFoundError(f"the model registry is not available ({exc})") from exc
        self.registry = registry
        self.model_path = registry.resolve_model_path(s.model)
        self.config = read_model_config(self.model_path)
        total = self.config.schedule.steps
        steps = s.steps if s.steps is not None else (registry.default_steps(s.model) or 1)
        if steps not in (1, total):
            raise ConfigError(f"--steps {steps}: use 1 (one-step) or {total} (this model's schedule)")
        self.steps = steps

    @property
    def scale(self) -> float:
        return self.s.image.outscale if self.s.image.outscale is not None else float(self.config.scale)

    def prepare(self) -> None:
        if self.upscaler is not None:
            return
        from tadsr_cli.engines import create_engine
        from tadsr_cli.pipeline.upscaler import Upscaler

        s = self.s
        model = self.registry.resolve_model(str(self.model_path))
        device = s.device
        local_rank = os.environ.get("LOCAL_RANK")
        if device == "auto" and local_rank is not None and local_rank.isdigit():
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{int(local_rank) % max(1, torch.cuda.device_count())}"
        opts: dict[str, Any] = {"seed": s.seed}  # every backend accepts it (only torch's ancestral sampler uses it)
        if s.backend.lower() != "torch":
            opts["model_path"] = self.model_path  # exported graphs/engines are cached next to the model file
        if s.backend.lower() == "tensorrt":
            opts.update(tile=s.tiles.tile, batch=s.tiles.batch)  # the engine's optimisation profile
        engine = create_engine(s.backend, model, device=device, precision=s.precision, steps=self.steps,
                               sampler=s.sampler, **opts)
        self.upscaler = Upscaler(engine, s.tiles, seed=s.seed)

    def process(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        if job.kind == "video":
            video = _video_module()
            if video is None:
                raise InputError(f"{job.src}: video support is not available in this installation")
            if self.s.image.outscale is not None:
                log.warning("--outscale applies to images only; %s is upscaled x%d", job.src.name,
                            self.config.scale)
            vopts = video.VideoOptions(**self.s.video)
            rep = video.upscale_video(job.src, job.dst, self.upscaler, vopts,
                                      progress=reporter.unit_callback("frame"))
            return {"frames": rep.frames_out, "fps": rep.fps, "out_size": list(rep.out_size)}
        from tadsr_cli.pipeline.image_io import upscale_image

        res = upscale_image(job.src, job.dst, self.upscaler, self.s.image,
                            progress=reporter.unit_callback("tile"))
        return {"out_size": list(res.out_size)}


def _video_module() -> Any:
    try:
        from tadsr_cli.pipeline import video
    except ImportError:
        return None
    return video


def _looks_like_video(path: Path) -> bool:
    """Content detection: a video (also a damaged one: the video reader then says what is wrong) or not.

    An animated GIF is an image here (its first frame is upscaled, with a warning); an unreadable, missing or
    special file is left to the image reader, which names the cause. Without the video module: by extension.
    """
    if not path.is_file():
        return False
    if _video_module() is None:
        return path.suffix.lower() in video_extensions()
    from tadsr_cli.pipeline import video_probe

    try:
        head = video_probe.sniff(path)
        if head == "image":
            return False
        return bool(head == "video" or video_probe.is_video(path) or path.suffix.lower() in video_extensions())
    except Exception:  # detection must never crash the run; the image reader will say what is wrong
        return False


def _setup_logging(console: Console) -> None:
    root = logging.getLogger()
    if not root.handlers:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # e.g. the engine's one-time "fp16 produced NaN" warning, as a log line


def _run(jobs: list[Job], session: Session, settings: RunSettings, title_files: int,
         always_table: bool = False) -> None:
    mode = "json" if settings.json_progress else ("quiet" if settings.quiet else "rich")
    console = Console(stderr=True)
    _setup_logging(console)
    debug = bool(os.environ.get("TADSR_DEBUG"))

    def on_error(job: Job, exc: BaseException) -> None:
        if debug:
            console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)

    results: list[FileResult] = []
    reporter = Reporter(mode, console=console)
    interrupted = False
    with reporter:
        reporter.begin(title_files)
        if not jobs:
            reporter.note("no image or video files to process")
        try:
            with sigterm_as_interrupt():
                results = run_jobs(
                    jobs,
                    lambda job: session.process(job, reporter),
                    overwrite=settings.overwrite,
                    prepare=session.prepare,
                    on_start=reporter.file_start,
                    on_result=reporter.file_end,
                    on_error=on_error,
                )
        except Interrupted as stop:
            results, interrupted = stop.results, True
    reporter.summary(results, interrupted=interrupted,
                     table=always_table or interrupted or len(results) > 1
                     or any(r.status == "failed" for r in results))
    if interrupted:
        raise typer.Exit(130)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def _settings(**kw: Any) -> RunSettings:
    video = {
        "codec": kw.pop("codec"),
        "crf": kw.pop("crf"),
        "preset": kw.pop("preset"),
        "pix_fmt": kw.pop("pix_fmt"),
        "max_frames": kw.pop("max_frames"),
        "allow_partial": kw.pop("allow_partial"),
    }
    tiles = TileOptions(tile=kw.pop("tile"), overlap=kw.pop("tile_overlap"), batch=kw.pop("tile_batch"),
                        blend=kw.pop("blend"))
    image = ImageOptions(outscale=kw.pop("outscale"), jpeg_quality=kw.pop("jpeg_quality"),
                         max_pixels=kw.pop("max_pixels"))
    s = RunSettings(tiles=tiles, image=image, video=video, **kw)
    s.validate()
    return s


# ---- tadsr upscale --------------------------------------------------------------------------------------------
def upscale_command(
    inputs: list[Path] = typer.Argument(..., help="Images (PNG, JPEG, WebP, TIFF, BMP) and/or videos."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file (one input) or folder. "
                                       "Default: next to each input as {stem}_x4.{ext}."),
    model: str | None = MODEL,
    backend: str = BACKEND,
    device: str = DEVICE,
    precision: str = PRECISION,
    seed: int = SEED,
    steps: int | None = STEPS,
    sampler: str = SAMPLER,
    tile: int = TILE,
    tile_overlap: int = OVERLAP,
    tile_batch: int = TILE_BATCH,
    blend: str = BLEND,
    outscale: float | None = OUTSCALE,
    ext: str | None = EXT,
    jpeg_quality: int = JPEG_QUALITY,
    max_pixels: int = MAX_PIXELS,
    name: str = NAME,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
    json_progress: bool = JSON_PROGRESS,
    codec: str = CODEC,
    crf: int = CRF,
    preset: str = PRESET,
    pix_fmt: str = PIX_FMT,
    max_frames: int | None = MAX_FRAMES,
    allow_partial: bool = ALLOW_PARTIAL,
) -> None:
    """Upscale images and videos x4 (videos are detected by content). Example: tadsr upscale photo.jpg"""
    settings = _settings(
        model=model, backend=backend, device=device, precision=precision, seed=seed, steps=steps, sampler=sampler,
        tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, blend=blend, outscale=outscale, ext=ext,
        jpeg_quality=jpeg_quality, max_pixels=max_pixels, name=name, overwrite=overwrite, quiet=quiet,
        json_progress=json_progress, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, max_frames=max_frames,
        allow_partial=allow_partial,
    )
    session = Session(settings)
    jobs = plan_files(inputs, output, settings, session.scale)
    _run(jobs, session, settings, len(jobs))


def plan_files(inputs: list[Path], output: Path | None, s: RunSettings, scale: float) -> list[Job]:
    """Output paths for `tadsr upscale`: next to each input, into folder `output`, or file `output`."""
    out_is_file = (
        output is not None and len(inputs) == 1 and not output.is_dir()
        and not str(output).endswith(("/", os.sep)) and output.suffix != ""
    )
    if output is not None and not out_is_file:
        if output.exists() and not output.is_dir():
            raise ConfigError(f"-o {output}: several inputs need an output folder, and this is a file")
        ensure_output_folder(output)
    jobs = []
    for src in inputs:
        kind = "video" if _looks_like_video(src) else "image"
        if out_is_file:
            assert output is not None
            if kind == "image":
                output_format(output)  # unknown extension: OutputError (exit 2) before any work
                if s.ext is not None and normalize_ext(output.suffix) != s.ext:
                    raise ConfigError(f"--ext {s.ext} contradicts the output file name {output.name}")
            jobs.append(Job(src, output, kind))
            continue
        out_ext = s.ext if kind == "image" else None
        if kind == "image" and out_ext is None and src.suffix.lower() not in IMAGE_EXTENSIONS:
            out_ext = ".png"  # e.g. photo.jfif or no extension: a lossless, widely readable default
        if kind == "video" and src.suffix.lower() not in video_extensions():
            out_ext = ".mp4"  # a video named like an image (or without extension): MP4 container
        fname = output_name(src, s.name, scale, out_ext)
        folder = src.parent if output is None else output
        jobs.append(Job(src, folder / fname, kind))
    return jobs


# ---- tadsr batch ----------------------------------------------------------------------------------------------
def batch_command(
    folder: Path = typer.Argument(..., help="Input folder (searched recursively)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output folder; mirrors the input tree. "
                                       "Default: FOLDER_x4 next to the input folder."),
    shard: str | None = typer.Option(None, "--shard", help="Process only part K of N (K/N, 1-based); default from "
                                     "torchrun's RANK/WORLD_SIZE."),
    videos: bool = typer.Option(True, "--videos/--no-videos", help="Also upscale videos found in the folder."),
    model: str | None = MODEL,
    backend: str = BACKEND,
    device: str = DEVICE,
    precision: str = PRECISION,
    seed: int = SEED,
    steps: int | None = STEPS,
    sampler: str = SAMPLER,
    tile: int = TILE,
    tile_overlap: int = OVERLAP,
    tile_batch: int = TILE_BATCH,
    blend: str = BLEND,
    outscale: float | None = OUTSCALE,
    ext: str | None = EXT,
    jpeg_quality: int = JPEG_QUALITY,
    max_pixels: int = MAX_PIXELS,
    name: str = NAME,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
    json_progress: bool = JSON_PROGRESS,
    codec: str = CODEC,
    crf: int = CRF,
    preset: str = PRESET,
    pix_fmt: str = PIX_FMT,
    max_frames: int | None = MAX_FRAMES,
    allow_partial: bool = ALLOW_PARTIAL,
) -> None:
    """Upscale every image (and video) under FOLDER into a mirrored tree. Example: tadsr batch ./imgs -o ./imgs_x4"""
    settings = _settings(
        model=model, backend=backend, device=device, precision=precision, seed=seed, steps=steps, sampler=sampler,
        tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, blend=blend, outscale=outscale, ext=ext,
        jpeg_quality=jpeg_quality, max_pixels=max_pixels, name=name, overwrite=overwrite, quiet=quiet,
        json_progress=json_progress, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, max_frames=max_frames,
        allow_partial=allow_partial,
    )
    check_input_folder(folder)
    shard_spec = parse_shard(shard)
    session = Session(settings)
    if output is None:
        output = folder.resolve().parent / f"{folder.resolve().name}_x{session.config.scale}"
    ensure_output_folder(output)
    jobs = plan_folder(folder, output, settings.name, session.scale, settings.ext, videos=videos)
    total_found = len(jobs)
    jobs = select_shard(jobs, shard_spec)
    if shard_spec is not None and not settings.json_progress and not settings.quiet:
        Console(stderr=True).print(f"shard {shard_spec[0] + 1}/{shard_spec[1]}: {len(jobs)} of {total_found} files",
                                   highlight=False)
    _run(jobs, session, settings, len(jobs), always_table=True)
