"""Temporal stability of upscaled video: per-frame PSNR-Y / ST-LPIPS and flicker (warping error), beside bicubic.

Flicker is the *warping error* between consecutive output frames: output frame t is warped onto frame t+1 with the
optical flow (OpenCV DIS) of the *reference* frames (the ground truth when given, else bicubic upscales of the LQ
frames, which carry the motion without the method's own noise), and the mean absolute difference (0-255, RGB) is
taken over pixels that are not occluded (forward-backward flow consistency) and not within `border` pixels of an
edge. The reference frames' own figure is the floor set by motion and interpolation; a method above it adds flicker.

Frames stream through one at a time (only the previous frame of each method is kept), so long videos fit in memory.

    from tadsr_cli.eval.temporal import evaluate_video
    report = evaluate_video(Path("clip.mp4"), None, {"mine": my_upscale})  # my_upscale(rgb01 HxWx3) -> rgb01
    report.summary()["bicubic"]["warp_error"]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError
from tadsr_cli.eval.psnr_ssim import psnr
from tadsr_cli.pipeline.temporal_filter import warp

FrameMethod = Callable[[np.ndarray], np.ndarray]  # RGB float32 [0, 1] HxWx3 -> upscaled RGB float32 [0, 1]
TemporalProgress = Callable[[int, int | None], None]  # (frames done, total or None)

REFERENCE = "reference"  # key of the flow source's own figures in the report


def iter_video_frames(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames of the first video stream of `path`, in presentation order."""
    path = Path(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
        except av.FFmpegError as exc:
            raise InputError(f"{path}: decoding failed after {count} frames ({exc})") from exc


def video_frame_count(path: Path) -> int | None:
    """Number of video packets (= frames), counted without decoding; None when the file cannot be read."""
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                return None
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size) or None
    except (av.FFmpegError, OSError, ValueError):
        return None


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 or float [0, 1] -> float32 [0, 1], `scale` times larger (OpenCV bicubic, clipped)."""
    x = lq.astype(np.float32) / 255.0 if lq.dtype == np.uint8 else lq.astype(np.float32)
    h, w = x.shape[:2]
    return np.clip(cv2.resize(x, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def to_u8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.round(rgb.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


# ---- flow and warping ------------------------------------------------------------------------------------------
class FlowEstimator:
    """DIS optical flow between consecutive reference frames, with an occlusion mask."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        self._dis = cv2.DISOpticalFlow_create(preset)

    def backward(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flow, valid): for each pixel of `cur`, where it was in `prev` (HxWx2), and where that is trustworthy."""
        g_prev = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY)
        g_cur = cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY)
        back = self._dis.calc(g_cur, g_prev, None)
        fwd = self._dis.calc(g_prev, g_cur, None)
        # Forward-backward check (Sundaram et al.): following back then forward should return to the start;
        # where it does not, the pixel was occluded or the flow is wrong, and any method would "flicker" there.
        fwd_at = warp(fwd, back)
        err = np.sum((back + fwd_at) ** 2, axis=-1)
        tol = 0.01 * (np.sum(back**2, axis=-1) + np.sum(fwd_at**2, axis=-1)) + 0.5
        return back, err <= tol


def resize_flow(flow: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flow and mask computed at one size, applied to frames of `size` (h, w)."""
    h, w = size
    if flow.shape[:2] == (h, w):
        return flow, valid
    sx, sy = w / flow.shape[1], h / flow.shape[0]
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([sx, sy], np.float32)
    mask = cv2.resize(valid.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out, mask


def warp_error(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray, valid: np.ndarray, border: int = 8) -> float:
    """Mean |cur - warp(prev)| on the 0-255 scale over valid pixels `border` px inside the frame."""
    h, w = cur.shape[:2]
    flow, valid = resize_flow(flow, valid, (h, w))
    diff = np.abs(cur.astype(np.float32) - warp(prev.astype(np.float32), flow)).mean(axis=-1)
    mask = valid.copy()
    if border > 0:
        mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = False, False, False, False
    if not mask.any():
        return float("nan")
    return float(diff[mask].mean())


# ---- the report ------------------------------------------------------------------------------------------------
@dataclass
class MethodTemporal:
    """Per-frame figures of one method (or of the reference frames)."""

    psnr_y: list[float] = field(default_factory=list)  # per frame, against GT (empty without GT)
    st_lpips: list[float] = field(default_factory=list)  # per frame, against GT (empty without GT or the metric)
    warp_error: list[float] = field(default_factory=list)  # per consecutive pair of frames

    def summary(self) -> dict[str, float | None]:
        def mean(v: list[float]) -> float | None:
            finite = [x for x in v if math.isfinite(x)]
            return float(np.mean(finite)) if finite else None

        return {"psnr_y": mean(self.psnr_y), "st_lpips": mean(self.st_lpips), "warp_error": mean(self.warp_error)}


@dataclass
class TemporalReport:
    frames: int
    flow_source: str  # "gt" or "bicubic"
    scale: int
    methods: dict[str, MethodTemporal]  # includes "bicubic" and REFERENCE (the flow source itself)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float | None]]:
        return {name: m.summary() for name, m in self.methods.items()}

    def to_json(self) -> dict[str, Any]:
        def clean(v: list[float]) -> list[float | None]:
            return [round(x, 6) if math.isfinite(x) else None for x in v]

        return {
            "frames": self.frames,
            "flow_source": self.flow_source,
            "scale": self.scale,
            "warp_error_definition": "mean |out[t+1] - warp(out[t], DIS flow of the reference frames)| (0-255 RGB),"
                                     " occluded pixels and an 8 px border excluded",
            "summary": self.summary(),
            "per_frame": {
                name: {"psnr_y": clean(m.psnr_y), "st_lpips": clean(m.st_lpips), "warp_error": clean(m.warp_error)}
                for name, m in self.methods.items()
            },
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        ref = "ground-truth" if self.flow_source == "gt" else "bicubic"
        lines = [
            f"# Temporal stability ({self.frames} frames, x{self.scale})",
            "",
            f"Flicker = warping error between consecutive output frames along the {ref} frames' optical flow "
            "(0-255, lower is steadier); the reference row is that of the flow source itself.",
            "",
            "| method | PSNR-Y | ST-LPIPS ↓ | warping error ↓ |",
            "|---|---:|---:|---:|",
        ]
        for name, row in self.summary().items():
            cells = [_cell(row["psnr_y"], 2), _cell(row["st_lpips"], 4), _cell(row["warp_error"], 3)]
            label = f"{REFERENCE} ({ref})" if name == REFERENCE else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [f"\n* {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _cell(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def write_temporal_report(report: TemporalReport, out_dir: Path) -> dict[str, Path]:
    """Write temporal.json and temporal.md into `out_dir` (atomically); returns their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the report folder ({exc.strerror or exc})") from exc
    paths = {"json": out_dir / "temporal.json", "markdown": out_dir / "temporal.md"}
    with atomic_write_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_write_path(paths["markdown"]) as tmp:
        tmp.write_text(report.to_markdown(), encoding="utf-8")
    return paths


# ---- measuring -------------------------------------------------------------------------------------------------
def measure_temporal(
    lq_frames: Iterable[np.ndarray],
    methods: Mapping[str, FrameMethod],
    gt_frames: Iterable[np.ndarray] | None = None,
    scale: int = 4,
    stlpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
    border: int = 8,
    progress: TemporalProgress | None = None,
    total: int | None = None,
) -> TemporalReport:
    """Run every method on every LQ frame and measure them; bicubic is always included.

    `lq_frames`: RGB uint8 (or float [0, 1]) frames; `gt_frames`: the matching HR frames (uint8), or None.
    `stlpips(sr, gt) -> float` (e.g. `eval.stlpips.STLPIPSMetric`) is used per frame when given and GT is present.
    """
    if "bicubic" in methods or REFERENCE in methods:
        raise InputError(f"method names 'bicubic' and '{REFERENCE}' are reserved")
    names = ["bicubic", *methods]
    report = TemporalReport(0, "gt" if gt_frames is not None else "bicubic", scale,
                            {n: MethodTemporal() for n in [REFERENCE, *names]})
    flow = FlowEstimator()
    prev: dict[str, np.ndarray] = {}
    gt_iter = iter(gt_frames) if gt_frames is not None else None
    if progress is not None:
        progress(0, total)
    for lq in lq_frames:
        lq01 = lq.astype(np.float32) / 255.0 if lq.dtype == np.uint8 else lq.astype(np.float32)
        outputs = {"bicubic": to_u8(bicubic_upscale(lq01, scale))}
        for name, fn in methods.items():
            outputs[name] = to_u8(fn(lq01))
        gt = None
        if gt_iter is not None:
            gt = next(gt_iter, None)
            if gt is None:
                report.notes.append(f"the GT video ended after {report.frames} frames; the rest is not measured")
                break
        reference = gt if gt is not None else outputs["bicubic"]
        if gt is not None:
            for name in names:
                out, ref_gt = _common_size(outputs[name], gt)
                report.methods[name].psnr_y.append(psnr(out, ref_gt, crop_border=scale))
                if stlpips is not None:
                    report.methods[name].st_lpips.append(float(stlpips(out, ref_gt)))
        if REFERENCE in prev:
            fl, valid = flow.backward(prev[REFERENCE], reference)
            report.methods[REFERENCE].warp_error.append(warp_error(prev[REFERENCE], reference, fl, valid, border))
            for name in names:
                a, b = _common_size(prev[name], outputs[name])
                report.methods[name].warp_error.append(warp_error(a, b, fl, valid, border))
        prev = {REFERENCE: reference, **outputs}
        report.frames += 1
        if progress is not None:
            progress(report.frames, total)
    if report.frames == 0:
        raise InputError("no frames to measure")
    if report.frames == 1:
        report.notes.append("a single frame: no warping error (it needs two)")
    return report


def _common_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both to their common top-left area (outputs padded for a codec, or GT not a multiple of the scale)."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


def evaluate_video(
    lq: Path,
    gt: Path | None,
    methods: Mapping[str, FrameMethod],
    scale: int = 4,
    max_frames: int | None = None,
    stlpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
    progress: TemporalProgress | None = None,
) -> TemporalReport:
    """`measure_temporal` over the frames of video files `lq` (and `gt`)."""
    total = video_frame_count(lq)
    if total is not None and max_frames is not None:
        total = min(total, max_frames)
    gt_frames = iter_video_frames(gt, max_frames) if gt is not None else None
    return measure_temporal(iter_video_frames(lq, max_frames), methods, gt_frames, scale=scale, stlpips=stlpips,
                            progress=progress, total=total)


@dataclass
class ModelSettings:
    """How `model_method` runs a model on each frame (the same pipeline as `tadsr upscale` on a video)."""

    device: str = "auto"
    precision: str = "fp32"
    steps: int | None = None  # None: what the model is meant for
    sampler: str = "deterministic"
    seed: int = 0
    tile: int = 128
    tile_overlap: int = 16
    tile_batch: int = 4
    noise_scale: float | None = None  # None: the video default of `tadsr upscale` (pipeline.settings)
    color_fix: str | None = None  # None: the default of `tadsr upscale`
    temporal_smoothing: float | None = None  # None: the video default of `tadsr upscale`


def model_method(model: str | None, settings: ModelSettings | None = None) -> tuple[str, FrameMethod]:
    """(label, frame method) for `--model` (None or "default": the embedded video default): what
    `tadsr upscale clip.mp4` runs.

    The pipeline `Upscaler` on one engine with one noise field per seed for every frame, the colour fix and the
    motion-compensated temporal smoothing; the method keeps state, so frames must come in order.
    """
    # Imported here: the engines pull in torch backends that plain metric users of this module do not need.
    from tadsr_cli.base.devices import resolve_device
    from tadsr_cli.engines import create_engine
    from tadsr_cli.models import registry
    from tadsr_cli.pipeline.color_fix import DEFAULT_COLOR_FIX, ColorFixedUpscaler
    from tadsr_cli.pipeline.settings import VIDEO_NOISE_SCALE, VIDEO_TEMPORAL_SMOOTHING
    from tadsr_cli.pipeline.temporal_filter import TemporalStabilizer
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    s = settings or ModelSettings()
    model = registry.model_name(model, "video")
    steps = s.steps or registry.default_steps(model) or 1
    device = resolve_device(s.device)
    engine = create_engine("torch", registry.resolve_model(model, device="cpu"), device=str(device),
                           precision=s.precision, steps=steps, sampler=s.sampler, seed=s.seed)
    noise_scale = VIDEO_NOISE_SCALE if s.noise_scale is None else s.noise_scale
    upscaler: Any = Upscaler(engine, TileOptions(tile=s.tile, overlap=s.tile_overlap, batch=s.tile_batch),
                             seed=s.seed, noise_scale=noise_scale)
    color_fix = DEFAULT_COLOR_FIX if s.color_fix is None else s.color_fix
    if color_fix != "none":
        upscaler = ColorFixedUpscaler(upscaler, color_fix)
    smoothing = VIDEO_TEMPORAL_SMOOTHING if s.temporal_smoothing is None else s.temporal_smoothing
    if smoothing > 0:
        upscaler = TemporalStabilizer(upscaler, smoothing)
    label = Path(model).stem if Path(model).suffix == ".safetensors" else model
    return f"{label} ({steps} step{'s' if steps != 1 else ''})", upscaler.upscale
