"""One upscaling session: checks the model early, builds its engine on first use, upscales image and video jobs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tadsr_cli.base.devices import resolve_device
from tadsr_cli.base.errors import ConfigError, EngineUnavailableError, OutputError
from tadsr_cli.engines import create_engine
from tadsr_cli.models.catalog import default_steps
from tadsr_cli.models.checkpoints import read_model_config
from tadsr_cli.models.model_cache import resolve_model, resolve_model_path
from tadsr_cli.pipeline import image_io
from tadsr_cli.pipeline.batch import Job, video_extensions
from tadsr_cli.pipeline.color_fix import ColorFixedUpscaler
from tadsr_cli.pipeline.settings import ModelSettings, RunSettings, resolve_precision
from tadsr_cli.pipeline.temporal_filter import TemporalStabilizer
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

log = logging.getLogger(__name__)

UnitProgress = Callable[[str], Callable[[int, int | None], None]]  # unit ("tile"/"frame") -> callback(done, total)


def model_steps(settings: ModelSettings, model: str, model_path: Path) -> int:
    """The sampling steps to run `model` (at `model_path`) with: `--steps`, else what the model is meant for;
    1 or the model's T only."""
    total = read_model_config(model_path).schedule.steps
    steps = settings.steps if settings.steps is not None else (default_steps(model) or 1)
    if steps not in (1, total):
        raise ConfigError(f"--steps {steps}: use 1 (one-step) or {total} (this model's schedule)")
    return steps


def build_upscaler(settings: ModelSettings, tiles: TileOptions, model_path: Path, steps: int,
                   color_fix: str = "none", model: Any = None) -> Any:
    """Engine + tiles + noise field (+ colour fix) for `model_path`; `model`: an already loaded network."""
    local_rank = os.environ.get("LOCAL_RANK")
    rank = int(local_rank) if local_rank is not None and local_rank.isdigit() else None
    device = resolve_device(settings.device, local_rank=rank)  # torchrun: one GPU per process
    precision = resolve_precision(settings.precision, device, settings.backend.lower(), steps)
    if model is None:
        model = resolve_model(str(model_path))
    opts: dict[str, Any] = {"seed": settings.seed}  # every backend accepts it (only torch's ancestral sampler uses it)
    if settings.backend.lower() != "torch":
        opts["model_path"] = model_path  # exported graphs/engines are cached next to the model file
    if settings.backend.lower() == "tensorrt":
        opts.update(tile=tiles.tile, batch=tiles.batch)  # the engine's optimisation profile
    try:
        engine = create_engine(settings.backend, model, device=str(device), precision=precision, steps=steps,
                               sampler=settings.sampler, **opts)
    except (EngineUnavailableError, OutputError, OSError) as exc:
        if settings.backend.lower() != "openvino":
            raise
        # OpenVINO is a speed-up, not a requirement: not installed, no bf16, a compile error, a full disk
        # while exporting its graph all leave a working torch run (one line says why)
        log.warning("--backend openvino unavailable (%s); running torch", str(exc).strip().splitlines()[0])
        engine = create_engine("torch", model, device=str(device), precision=precision, steps=steps,
                               sampler=settings.sampler, seed=settings.seed)
    upscaler = Upscaler(engine, tiles, seed=settings.seed, noise_scale=settings.noise_scale_for("image"))
    return upscaler if color_fix == "none" else ColorFixedUpscaler(upscaler, color_fix)


class Session:
    """Model headers first (cheap: validates --model and --steps), each model and engine on first real work.

    Images and videos may run different models (`ModelSettings.model_for`: without --model a video gets the
    embedded video student); inputs of both kinds that name the same model share one engine."""

    KINDS = ("image", "video")

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        names = {kind: settings.model.model_for(kind) for kind in self.KINDS}
        self.model_paths = {kind: resolve_model_path(name) for kind, name in names.items()}
        self.steps = {kind: model_steps(settings.model, names[kind], self.model_paths[kind]) for kind in self.KINDS}
        self.model_path = self.model_paths["image"]
        self.config = read_model_config(self.model_path)
        self._upscalers: dict[tuple[Path, int], Any] = {}

    @property
    def scale(self) -> float:
        outscale = self.settings.image.outscale
        return outscale if outscale is not None else float(self.config.scale)

    def prepare(self, kind: str = "image") -> None:
        self.upscaler_for(kind)

    def upscaler_for(self, kind: str) -> Any:
        """The upscaler of `kind`'s model (built on first use, shared by kinds with the same model)."""
        key = (self.model_paths[kind], self.steps[kind])
        if key not in self._upscalers:
            s = self.settings
            self._upscalers[key] = build_upscaler(s.model, s.tiles, key[0], key[1], s.color_fix)
        return self._upscalers[key]

    def resume_key(self) -> str:
        """What decides a video's pixels besides the video options; a run is resumed only when it matches."""
        path = self.model_paths["video"]
        st = path.stat()
        m = self.settings.model
        return (f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}|{m.backend}|{m.precision}|{m.seed}|"
                f"{self.steps['video']}|{m.sampler}|{self.settings.tiles}|{self.settings.color_fix}|"
                f"{m.noise_scale_for('video')}|{self.settings.temporal_smoothing}")

    def video_upscaler(self) -> Any:
        """The frame upscaler of one video: the video model's, at the video noise scale, with its own temporal
        filter (no memory across files)."""
        upscaler = self.upscaler_for("video")
        upscaler.noise_scale = self.settings.model.noise_scale_for("video")
        if self.settings.temporal_smoothing > 0:
            upscaler = TemporalStabilizer(upscaler, self.settings.temporal_smoothing)
        return upscaler

    def upscale_video(self, src: Path, dst: Path, progress: Callable[[int, int | None], None] | None = None,
                      wrap: Callable[[Any], Any] | None = None, resume: bool = True) -> Any:
        """`src` -> `dst` as `tadsr upscale` does it; returns the `VideoReport`.

        `wrap(upscaler)` may wrap the frame upscaler (eval measures each frame there). `resume`: an interrupted
        video continues from its last finished segment (--overwrite starts over); eval turns it off, since it must
        see every frame."""
        from tadsr_cli.pipeline import video  # loaded on first use (PyAV and the video stages)

        options = video.VideoOptions(**self.settings.video, outscale=self.settings.image.outscale, resume=resume,
                                     restart=self.settings.output.overwrite, resume_key=self.resume_key())
        upscaler = self.video_upscaler()
        if wrap is not None:
            upscaler = wrap(upscaler)
        return video.upscale_video(src, dst, upscaler, options, progress=progress)

    def process(self, job: Job, progress: UnitProgress) -> dict[str, Any]:
        if job.kind == "video":
            rep = self.upscale_video(job.src, job.dst, progress("frame"))
            return {"frames": rep.frames_out, "fps": rep.fps, "out_size": list(rep.out_size),
                    "resumed_frames": rep.resumed_frames}
        upscaler = self.upscaler_for(job.kind)
        upscaler.noise_scale = self.settings.model.noise_scale_for(job.kind)
        res = image_io.upscale_image(job.src, job.dst, upscaler, self.settings.image, progress=progress("tile"))
        return {"out_size": list(res.out_size)}


def looks_like_video(path: Path) -> bool:
    """Content detection: a video (also a damaged one: the video reader then says what is wrong) or not.

    An animated GIF is an image here (its first frame is upscaled, with a warning); an unreadable, missing or
    special file is left to the image reader, which names the cause.
    """
    if not path.is_file():
        return False
    from tadsr_cli.pipeline import video_probe

    try:
        head = video_probe.sniff(path)
        if head == "image":
            return False
        return bool(head == "video" or video_probe.is_video(path) or path.suffix.lower() in video_extensions())
    except Exception:  # detection must never crash the run; the image reader will say what is wrong
        return False
