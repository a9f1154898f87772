"""Temporal stability of upscaled video: per-frame PSNR-Y / ST-LPIPS and flicker (warping error), beside bicubic.

Flicker is the *warping error* between consecutive output frames: output frame t is warped onto frame t+1 with the
optical flow (OpenCV DIS) of the *reference* frames (the ground truth when given, else bicubic upscales of the LQ
frames, which carry the motion without the method's own noise), and the mean absolute difference (0-255, RGB) is
taken over pixels that are not occluded (forward-backward flow consistency) and not within `border` pixels of an
edge. The reference frames' own figure is the floor set by motion and interpolation; a method above it adds flicker.

Frames stream through one at a time (only the previous frame of each method is kept), so long videos fit in memory.
`evaluate_video` measures what `tadsr upscale VIDEO` makes: each model runs through the session's own video path
(`Session.upscale_video`: the pipeline's reader, engine, tiles, colour fix, temporal filter, encoder) and every frame
is measured on its way to the encoder, as the 8-bit values an 8-bit output gets. `measure_temporal` measures frame
methods on frames in memory (benchmarks):

    report = measure_temporal(lq_frames, {"mine": my_upscale}, gt_frames)  # my_upscale(rgb01 HxWx3) -> rgb01
    report.summary()["bicubic"]["warp_error"]
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError
from tadsr_cli.eval.baselines import baseline_upscale
from tadsr_cli.eval.psnr_ssim import psnr
from tadsr_cli.pipeline.image_read import to_float01
from tadsr_cli.pipeline.temporal_filter import warp
from tadsr_cli.pipeline.video_format import to_rgb24

if TYPE_CHECKING:
    from tadsr_cli.pipeline.session import Session
    from tadsr_cli.pipeline.settings import RunSettings

FrameMethod = Callable[[np.ndarray], np.ndarray]  # RGB float32 [0, 1] HxWx3 -> upscaled RGB float32 [0, 1]
TemporalProgress = Callable[[int, int | None], None]  # (frames done, total or None)
FrameSink = Callable[[str, int, np.ndarray], None]  # (method, frame index, the measured RGB uint8 frame)

REFERENCE = "reference"  # key of the flow source's own figures in the report


def bicubic_upscale(lq: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 or float [0, 1] -> float32 [0, 1], `scale` times larger (eval's bicubic baseline)."""
    return baseline_upscale(lq, "bicubic", scale)


def to_u8(rgb: np.ndarray) -> np.ndarray:
    """The 8-bit frame that is measured: for float output, the values an 8-bit output video is encoded from."""
    return rgb if rgb.dtype == np.uint8 else to_rgb24(rgb)


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
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: how it ran (`evaluate_video`)

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
            "runs": self.runs,
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
        for name, run in self.runs.items():
            how = ", ".join(f"{k} {v}" for k, v in run.items() if k != "model" and v is not None)
            lines.append(f"\n* {name}: {how}")
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
class TemporalMeter:
    """Measures frames as they come, in display order: `add(lq, outputs)` once per LQ frame, then `finish()`.

    `gt_frames`: the matching HR frames (RGB uint8, or float [0, 1]), or None (the flow then comes from bicubic).
    `stlpips(sr, gt) -> float` (e.g. `eval.stlpips.STLPIPSMetric`) is used per frame when given and GT is present.
    `on_frame(method, index, rgb_u8)` sees every measured output frame.
    """

    def __init__(self, names: Sequence[str], gt_frames: Iterable[np.ndarray] | None = None, scale: int = 4,
                 stlpips: Callable[[np.ndarray, np.ndarray], float] | None = None, border: int = 8,
                 on_frame: FrameSink | None = None) -> None:
        if REFERENCE in names:
            raise InputError(f"method name '{REFERENCE}' is reserved")
        self.report = TemporalReport(0, "gt" if gt_frames is not None else "bicubic", scale,
                                     {n: MethodTemporal() for n in [REFERENCE, *names]})
        self.scale, self.stlpips, self.border, self.on_frame = scale, stlpips, border, on_frame
        self.ended = False  # the GT video ended: later frames are not measured
        self._gt = iter(gt_frames) if gt_frames is not None else None
        self._flow = FlowEstimator()
        self._prev: dict[str, np.ndarray] = {}

    def add(self, lq: np.ndarray, outputs: Mapping[str, np.ndarray]) -> None:
        """Measure the outputs (RGB float [0, 1] or uint8, by method) of the next LQ frame `lq`."""
        if self.ended:
            return
        rep = self.report
        gt = None
        if self._gt is not None:
            gt = next(self._gt, None)
            if gt is None:
                self.ended = True
                rep.notes.append(f"the GT video ended after {rep.frames} frames; the rest is not measured")
                return
            gt = to_u8(gt)
        frames = {name: to_u8(out) for name, out in outputs.items()}
        if gt is not None:
            reference = gt
        else:
            reference = frames["bicubic"] if "bicubic" in frames else to_u8(bicubic_upscale(lq, self.scale))
        for name, out in frames.items():
            if gt is not None:
                a, b = _common_size(out, gt)
                rep.methods[name].psnr_y.append(psnr(a, b, crop_border=self.scale))
                if self.stlpips is not None:
                    rep.methods[name].st_lpips.append(float(self.stlpips(a, b)))
            if self.on_frame is not None:
                self.on_frame(name, rep.frames, out)
        if REFERENCE in self._prev:
            prev_ref = self._prev[REFERENCE]
            fl, valid = self._flow.backward(prev_ref, reference)
            rep.methods[REFERENCE].warp_error.append(warp_error(prev_ref, reference, fl, valid, self.border))
            for name, out in frames.items():
                a, b = _common_size(self._prev[name], out)
                rep.methods[name].warp_error.append(warp_error(a, b, fl, valid, self.border))
        self._prev = {REFERENCE: reference, **frames}
        rep.frames += 1

    def finish(self) -> TemporalReport:
        if self.report.frames == 0:
            raise InputError("no frames to measure")
        if self.report.frames == 1:
            self.report.notes.append("a single frame: no warping error (it needs two)")
        return self.report


def measure_temporal(
    lq_frames: Iterable[np.ndarray],
    methods: Mapping[str, FrameMethod],
    gt_frames: Iterable[np.ndarray] | None = None,
    scale: int = 4,
    stlpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
    border: int = 8,
    progress: TemporalProgress | None = None,
    total: int | None = None,
    on_frame: FrameSink | None = None,
) -> TemporalReport:
    """Run every method on every LQ frame (RGB uint8 or float [0, 1]) and measure them; bicubic is always included.

    See `TemporalMeter` for `gt_frames`, `stlpips` and `on_frame`.
    """
    if "bicubic" in methods:
        raise InputError("method name 'bicubic' is reserved")
    meter = TemporalMeter(["bicubic", *methods], gt_frames, scale, stlpips, border, on_frame)
    if progress is not None:
        progress(0, total)
    for lq in lq_frames:
        lq01 = to_float01(lq)
        meter.add(lq01, {"bicubic": bicubic_upscale(lq01, scale), **{n: fn(lq01) for n, fn in methods.items()}})
        if meter.ended:
            break
        if progress is not None:
            progress(meter.report.frames, total)
    return meter.finish()


def _common_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both to their common top-left area (outputs padded for a codec, or GT not a multiple of the scale)."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


# ---- a video, as `tadsr upscale` makes it --------------------------------------------------------------------------
@dataclass
class VideoRun:
    """One model on the video: the settings `tadsr upscale` would run with, and where its output video goes."""

    label: str
    settings: RunSettings
    dst: Path


def run_label(session: Session) -> str:
    """`name (N step[s])` of the model a session runs on video."""
    name = session.settings.model.model_for("video")
    label = Path(name).stem if Path(name).suffix == ".safetensors" else name
    steps = session.steps["video"]
    return f"{label} ({steps} step{'s' if steps != 1 else ''})"


def video_method(session: Session) -> tuple[str, FrameMethod]:
    """(label, frame method): the frame upscaler `tadsr upscale` runs on one video, for frames in memory.

    It keeps state (temporal filter), so frames must come in order, from one video.
    """
    return run_label(session), session.video_upscaler().upscale


class _Measured:
    """The frame upscaler `tadsr upscale` built, unchanged, measuring each frame it hands to the encoder."""

    def __init__(self, inner: Any, label: str, meter: TemporalMeter) -> None:
        self.inner, self.label, self.meter = inner, label, meter
        self.scale = inner.scale

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        out = self.inner.upscale(rgb)
        self.meter.add(rgb, {self.label: out})
        return out


def evaluate_video(
    lq: Path,
    gt: Path | None,
    runs: Sequence[VideoRun],
    baselines: Sequence[str] = (),
    scale: int = 4,
    max_frames: int | None = None,
    stlpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    on_frame: FrameSink | None = None,
) -> TemporalReport:
    """Each run through `tadsr upscale`'s video path (its output written to `run.dst`), then bicubic and
    `baselines` on the same LQ frames, all measured against `gt` (read by the pipeline's video reader).

    `max_frames`: the first N frames only (as `tadsr upscale --max-frames N`). `progress(pass, done, total)`.
    """
    from tadsr_cli.pipeline.session import Session
    from tadsr_cli.pipeline.video_demux import read_frames

    def gt_frames() -> Iterable[np.ndarray] | None:
        return None if gt is None else read_frames(gt, max_frames)

    def ticks(name: str) -> TemporalProgress | None:
        return None if progress is None else functools.partial(progress, name)

    parts: list[TemporalReport] = []
    runs_info: dict[str, dict[str, Any]] = {}
    total = max_frames
    for run in runs:
        settings = replace(run.settings, video={**run.settings.video, "max_frames": max_frames})
        session = Session(settings)
        meter = TemporalMeter([run.label], gt_frames(), scale, stlpips, on_frame=on_frame)
        video = session.upscale_video(lq, run.dst, ticks(run.label), resume=False,  # eval sees every frame
                                      wrap=functools.partial(_Measured, label=run.label, meter=meter))
        parts.append(meter.finish())
        runs_info[run.label] = _describe(session)
        total = video.frames_in
        del session  # its engine's memory goes before the next run's
    names = [b for b in baselines if b != "bicubic"]
    methods = {b: functools.partial(baseline_upscale, kind=b, scale=scale) for b in names}
    report = measure_temporal(read_frames(lq, max_frames), methods, gt_frames(), scale, stlpips,
                              progress=ticks(", ".join(["bicubic", *names])), total=total, on_frame=on_frame)
    for part in parts:
        label = next(n for n in part.methods if n != REFERENCE)
        report.methods[label] = part.methods[label]
        report.notes += [n for n in part.notes if n not in report.notes]
        if part.frames != report.frames:
            report.notes.append(f"{label}: {part.frames} frames measured, {report.frames} for bicubic")
    report.runs = runs_info
    return report


def _describe(session: Session) -> dict[str, Any]:
    """How a run ran, as resolved (backend, precision): for the report."""
    s = session.settings
    engine = session.upscaler_for("video").engine
    return {"model": str(session.model_paths["video"]), "steps": session.steps["video"],
            "backend": getattr(engine, "name", s.model.backend), "precision": getattr(engine, "precision", None),
            "device": str(getattr(engine, "device", s.model.device)), "seed": s.model.seed,
            "tile": s.tiles.tile, "color_fix": s.color_fix, "noise_scale": s.model.noise_scale_for("video"),
            "temporal_smoothing": s.temporal_smoothing}
