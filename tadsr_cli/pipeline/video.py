"""Streaming, resumable video upscaling with PyAV: decode -> upscale -> encode segments -> join with the other streams.

    reader thread ──(frames, bounded)──> caller thread: upscaler ──(bounded)──> encoder thread: closed-GOP segments
    then: segments + the input's audio/subtitles/data ──> output container (atomic)

* Memory is bounded by `VideoOptions.queue_size` frames per queue, whatever the length of the video. Errors in any
  stage stop all stages; threads are always joined. The caller's thread runs the upscaler, so Ctrl-C
  (KeyboardInterrupt) lands there; the other stages stop and the interrupt is re-raised.
* Decoding, the network and encoding overlap (PyAV releases the GIL in codec work), so a video runs at nearly the
  upscaler's own speed.
* Resume (`VideoOptions(resume=True)`, what `tadsr upscale` does): finished segments stay in a hidden work folder
  next to the output after an interruption or failure; the same call continues after the last finished segment
  (`VideoReport.resumed_frames`), `restart=True` starts over. Without it nothing is left behind.
* Frame count and timestamps are exact (every output frame keeps its input pts; VFR stays VFR), colour tags and the
  display matrix are copied (`video_format`); other streams are remuxed untouched or dropped with a warning when
  the output container cannot hold them (`video_mux`); truncated input is refused unless `allow_partial`
  (`video_demux`, `video_probe`).
* `outscale`: frames are resized after the model to `outscale` x the input size, rounded to the even sizes the
  pixel format needs. The container follows the output's extension (or `container_format`); `codec="auto"` picks
  H.264, or VP9 for WebM.
* Not carried (PyAV cannot set them): HDR mastering-display / content-light-level side data and other per-frame
  side data (closed captions A53, SEI).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.video.stream
import numpy as np

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError, TadsrError
from tadsr_cli.pipeline.video_demux import Decoder, Frame
from tadsr_cli.pipeline.video_format import (
    EncoderSpec,
    FrameUpscaler,
    VideoFormat,
    choose_pix_fmt,
    frame_format,
    output_geometry,
)
from tadsr_cli.pipeline.video_mux import (
    OutputTarget,
    StreamPlan,
    container_name,
    join,
    open_output,
    wants_global_header,
)
from tadsr_cli.pipeline.video_probe import (
    VIDEO_EXTENSIONS,
    PrescanResult,
    frame_rate,
    is_video,
    open_video,
    prescan,
)
from tadsr_cli.pipeline.video_segments import SegmentInfo, SegmentWriter, WorkFolder, extradata_hash
from tadsr_cli.pipeline.video_stages import END, Channel, Stopped, join_all

__all__ = ["VIDEO_EXTENSIONS", "FrameUpscaler", "VideoOptions", "VideoReport", "is_video", "upscale_video"]

log = logging.getLogger(__name__)

AUTO_CODECS = {"webm": ("libvpx-vp9", "libsvtav1", "libaom-av1")}  # container -> encoders it can hold, preferred first


@dataclass
class VideoOptions:
    """Output encoding and pipeline settings. Defaults: H.264 (libx264) CRF 18, preset medium, yuv420p."""

    codec: str = "auto"  # "auto": libx264, or VP9 (AV1) where the container needs it (WebM)
    crf: int | None = 18  # used when the encoder has a `crf` option (x264, x265, vpx, svt-av1, ...)
    preset: str | None = "medium"  # used when the encoder has a `preset` option
    pix_fmt: str = "yuv420p"  # "auto": yuv420p, or yuv420p10le when the input has more than 8 bits
    container_format: str | None = None  # None: from the output extension (the input's when there is none)
    outscale: float | None = None  # final size / input size; None: the model's scale (odd sizes padded)
    queue_size: int = 4  # frames buffered between stages (per queue)
    max_frames: int | None = None  # stop after this many frames (previews); other streams are cut to match
    allow_partial: bool = False  # truncated/damaged input: upscale what decodes instead of raising InputError
    prescan: bool = True  # demux-only pass first: exact frame count for progress + early truncation check
    codec_options: dict[str, str] = field(default_factory=dict)  # extra encoder options, e.g. {"tune": "film"}
    container_options: dict[str, str] = field(default_factory=dict)  # extra muxer options
    faststart: bool = True  # MP4/MOV: move the index to the front (playable while downloading)
    segment_frames: int = 48  # frames per closed-GOP segment (the unit of resumption)
    resume: bool = False  # keep finished segments after a failure and continue from them on the next call
    restart: bool = False  # discard the segments of an earlier run instead of continuing from them
    resume_key: str = ""  # what else decides the pixels (model, seed, ...): a work folder made with another is redone

    def validate(self) -> None:
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.segment_frames < 1:
            raise ValueError("segment_frames must be >= 1")
        if self.outscale is not None and not 0 < self.outscale <= 64:
            raise ValueError("outscale must be in (0, 64]")


@dataclass
class VideoReport:
    src: Path
    dst: Path
    frames_in: int  # frames decoded (and upscaled, now or by the run this one resumed)
    frames_out: int  # video packets written (one per frame)
    frames_expected: int | None  # from the prescan / container, None if unknown
    duration_s: float  # media duration of the written video (last frame end - first frame start)
    elapsed_s: float  # wall time
    fps: float  # frames upscaled in this call / elapsed_s, end to end
    in_size: tuple[int, int]  # (width, height)
    out_size: tuple[int, int]  # (width, height) as encoded, after padding or resizing
    padded: tuple[int, int] = (0, 0)  # (columns, rows) added on the right/bottom for the pixel format
    copied_streams: list[str] = field(default_factory=list)  # "1:audio:aac", ...
    dropped_streams: list[str] = field(default_factory=list)
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    resumed_frames: int = 0  # frames taken from an interrupted earlier run's segments
    codec: str = ""  # the encoder used


def resolve_codec(options: VideoOptions, dst: Path, container: str | None) -> str:
    """`auto`: libx264, or the first available encoder a container like WebM requires."""
    if options.codec != "auto":
        return options.codec
    kind = container or dst.suffix.lower().lstrip(".")
    for name in AUTO_CODECS.get(kind, ()):
        if name in av.codecs_available:
            return name
    return "libx264"


_DRAINED = object()  # sent to the encoder after the upscaler failed: no more frames will come


class _Run:
    """State of one `upscale_video` call (kept off the module: no global state)."""

    def __init__(self, src: Path, dst: Path, upscaler: FrameUpscaler, options: VideoOptions,
                 progress: Callable[[int, int | None], None] | None) -> None:
        self.src, self.dst, self.upscaler, self.options, self.progress = src, dst, upscaler, options, progress
        self.stop = threading.Event()  # every stage stops (a stage failed, or Ctrl-C while draining)
        self.stop_reading = threading.Event()  # only decoding stops (the upscaler failed; encoding drains)
        self.errors: list[BaseException] = []
        self.decoder = Decoder(src, options.allow_partial)
        self.frames_up = 0

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()
        self.stop_reading.set()

    # ---- stages -------------------------------------------------------------------------------------------------
    def reader(self, frames: Iterator[av.VideoFrame], chan: Channel, fmt: VideoFormat, skip: int) -> None:
        try:
            self.decoder.feed(frames, chan, fmt, skip, self.stop_reading)
        except Stopped:
            pass
        except av.FFmpegError as exc:
            self.fail(InputError(f"{self.src}: cannot decode video ({exc})"))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller's thread
            self.fail(exc)

    def encoder(self, chan: Channel, spec: EncoderSpec, work: WorkFolder, global_header: bool) -> None:
        """Encode frames into segments of `segment_frames`, each by a fresh encoder.

        A full segment is drained (the encoder's look-ahead: tens of frames) and committed by a helper thread while
        this one starts the next segment, so the upscaler never waits for a drain. Segments commit in order.
        """
        per = self.options.segment_frames
        cc: Any = None
        seg: SegmentWriter | None = None
        closing: threading.Thread | None = None  # the previous segment's drain + commit
        try:
            while True:
                item = chan.get()
                if item is END or item is _DRAINED:
                    break
                assert isinstance(item, Frame)
                if seg is None:
                    cc = spec.open_standalone(global_header)
                    seg = SegmentWriter(work.segment_path(item.index // per), item.index // per, extradata_hash(cc))
                for pkt in cc.encode(spec.make_frame(item.rgb, item.pts, item.duration)):
                    seg.write(pkt)
                seg.add_frame(item.pts, item.duration)
                if (item.index + 1) % per == 0:
                    closing = self._close_later(cc, seg, work, closing)
                    cc = seg = None
            if item is END:
                if seg is not None:  # the last, partial segment
                    self._close(cc, seg, work, closing)
                    cc = seg = None
                elif closing is not None:
                    closing.join()
                if not self.errors:
                    work.mark_complete()
        except Stopped:
            pass
        except av.FFmpegError as exc:
            self.fail(OutputError(f"{self.dst}: encoding failed ({exc})"))
        except OSError as exc:
            self.fail(OutputError(f"{self.dst}: cannot write ({exc.strerror or exc})"))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller's thread
            self.fail(exc)
        finally:
            if seg is not None:  # a partial segment after a failure: nothing to resume from
                seg.abort()
            if closing is not None:
                join_all(self.stop, closing)  # whole segments still drain and commit (kept for a resume)

    def _close(self, cc: Any, seg: SegmentWriter, work: WorkFolder, previous: threading.Thread | None) -> None:
        """Drain the encoder into the segment and commit it, after the previous segment (order is kept)."""
        try:
            for pkt in cc.encode(None):
                seg.write(pkt)
            if previous is not None:
                previous.join()
            if self.errors:
                seg.abort()
                return
            work.done.append(seg.commit())
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller's thread
            seg.abort()
            self.fail(OutputError(f"{self.dst}: encoding failed ({exc})") if isinstance(exc, av.FFmpegError)
                      else exc)

    def _close_later(self, cc: Any, seg: SegmentWriter, work: WorkFolder,
                     previous: threading.Thread | None) -> threading.Thread:
        t = threading.Thread(target=self._close, args=(cc, seg, work, previous), name="tadsr-video-segment",
                             daemon=True)
        t.start()
        return t

    def pump(self, frames: Iterator[av.VideoFrame], fmt: VideoFormat, spec: EncoderSpec, work: WorkFolder,
             global_header: bool, expected: int | None) -> None:
        """Run reader and encoder threads around the upscaling loop in this thread; always join them."""
        skip = work.frames_done
        to_up = Channel(self.options.queue_size, self.stop_reading)
        to_enc = Channel(self.options.queue_size, self.stop)
        reader = threading.Thread(target=self.reader, args=(frames, to_up, fmt, skip), name="tadsr-video-decode",
                                  daemon=True)
        writer = threading.Thread(target=self.encoder, args=(to_enc, spec, work, global_header),
                                  name="tadsr-video-encode", daemon=True)
        reader.start()
        writer.start()
        scale = self.upscaler.scale
        exp_shape = (fmt.height * scale, fmt.width * scale, 3)
        if self.progress is not None:
            self.progress(skip, expected)
        try:
            while True:
                item = to_up.get()
                if item is END:
                    to_enc.put(END, is_frame=False)
                    break
                up = self.upscaler.upscale(item.rgb)
                if not isinstance(up, np.ndarray) or up.shape != exp_shape:
                    got = getattr(up, "shape", type(up).__name__)
                    raise TadsrError(f"upscaler returned {got}, expected an array of shape {exp_shape}")
                to_enc.put(Frame(item.index, up.astype(np.float32, copy=False), item.pts, item.duration),
                           is_frame=True)
                self.frames_up += 1
                if self.progress is not None:
                    self.progress(skip + self.frames_up, expected)
            writer.join()
        except Stopped:
            pass
        except BaseException as exc:
            if self.options.resume and not self.errors:
                self._drain(to_enc, writer)
            self.fail(exc)
        finally:
            if self.errors:
                self.stop.set()
            # On success the reader has finished (it sent END) and the writer is joined; on failure both poll stop.
            join_all(self.stop, reader, writer)
        if self.errors:
            raise self.errors[0]

    def _drain(self, to_enc: Channel, writer: threading.Thread) -> None:
        """The upscaler failed (or Ctrl-C): stop decoding, but let the encoder finish the frames already upscaled,
        so that every whole segment is kept for the resume."""
        self.stop_reading.set()
        with contextlib.suppress(Stopped):
            to_enc.put(_DRAINED, is_frame=False)
        join_all(self.stop, writer)


def upscale_video(
    src: Path,
    dst: Path,
    upscaler: FrameUpscaler,
    options: VideoOptions | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoReport:
    """Upscale every frame of video `src` into `dst` (atomic), remuxing the other streams untouched.

    `upscaler.upscale(rgb HxWx3 float32 [0,1]) -> (scale*H, scale*W, 3) float32 [0,1]` runs in the caller's
    thread; decoding and encoding run concurrently in two worker threads. `progress(done, total)` is called
    after each upscaled frame (`total` is None when unknown). Raises `InputError` for unreadable, empty,
    non-video or (unless `options.allow_partial`) truncated input, `OutputError` for output problems.
    """
    src, dst = Path(src), Path(dst)
    options = options or VideoOptions()
    options.validate()
    if dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output would overwrite the input")
    t0 = time.perf_counter()
    run = _Run(src, dst, upscaler, options, progress)
    inp, vstream = open_video(src)
    try:
        vstream.thread_type = "AUTO"
        scan, expected = _expected_frames(run, vstream)
        frames = run.decoder.frames(inp, vstream, options.max_frames)
        first = next(frames, None)
        if first is None:
            raise InputError(f"{src}: no decodable video frames")
        fmt = frame_format(first, vstream)
        target = OutputTarget(dst, options.container_format, dict(options.container_options), options.faststart)
        spec = encoder_spec(options, target, inp, vstream, fmt, upscaler.scale)
        spec.check()
        plan, global_header = check_output(target, inp, vstream, spec)
        work = WorkFolder.open(dst, work_manifest(src, spec, options, container_name(target, inp)),
                               reuse=options.resume and not options.restart)
        try:
            resumed = work.frames_done
            if work.restarted_because:
                run.decoder.warnings.append(f"started over: {work.restarted_because}")
            if not work.complete:
                run.pump(_chain(first, frames), fmt, spec, work, global_header, expected)
            _finish_checks(run, scan, vstream, work)
            segments = list(work.done)
            frames_out, plan = write_output(target, src, vstream, spec, segments)
            work.clear()
        except BaseException:
            if not (options.resume and work.done):
                work.clear()
            raise
    except OSError as exc:
        raise OutputError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
    finally:
        inp.close()
    return _report(run, segments, spec, plan, frames_out, expected, resumed, time.perf_counter() - t0)


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


def _expected_frames(run: _Run, vstream: av.video.stream.VideoStream) -> tuple[PrescanResult | None, int | None]:
    """Prescan (early truncation check) and the number of frames this run will produce, if known."""
    options = run.options
    scan: PrescanResult | None = None
    if options.prescan:
        scan = prescan(run.src, vstream.index, vstream)
        if scan.packets == 0:
            why = (f"; the container declares {scan.declared_frames} frames: the file is truncated"
                   if scan.declared_frames else "")
            raise InputError(f"{run.src}: no video frames (the video stream is empty{why})")
        if scan.problem:
            run.decoder.damaged(scan.problem)
    expected = scan.packets if scan is not None and scan.packets else (vstream.frames or None)
    if scan is not None and scan.declared_frames and not scan.problem:
        expected = scan.declared_frames
    if options.max_frames is not None:
        expected = min(expected, options.max_frames) if expected else options.max_frames
    return scan, expected


def encoder_spec(options: VideoOptions, target: OutputTarget, inp: av.container.InputContainer,
                 vstream: av.video.stream.VideoStream, fmt: VideoFormat, scale: int) -> EncoderSpec:
    """How the output's frames are encoded (codec, pixel format, geometry, timing), from the options and input."""
    pix_fmt = choose_pix_fmt(options.pix_fmt, fmt.bits)
    return EncoderSpec(
        codec=resolve_codec(options, target.dst, container_name(target, inp)),
        pix_fmt=pix_fmt,
        geometry=output_geometry(fmt, scale, options.outscale, pix_fmt),
        time_base=vstream.time_base or Fraction(1, 1000),
        rate=frame_rate(vstream),
        fmt=fmt,
        crf=options.crf,
        preset=options.preset,
        codec_options=tuple(sorted((k, str(v)) for k, v in options.codec_options.items())),
    )


def check_output(target: OutputTarget, inp: av.container.InputContainer, vstream: av.video.stream.VideoStream,
                 spec: EncoderSpec) -> tuple[StreamPlan, bool]:
    """Open the output once before any upscaling (header only, then discarded): a container that cannot hold the
    codec fails now, not after hours; also tells whether the container wants global headers."""
    probe = target.dst.parent / f".{target.dst.name}.header-check{target.dst.suffix}"
    try:
        out, _, plan = open_output(target, probe, inp, vstream, spec)
        global_header = wants_global_header(out)
        with contextlib.suppress(Exception):
            out.close()
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return plan, global_header


def work_manifest(src: Path, spec: EncoderSpec, options: VideoOptions, container: str | None) -> dict[str, Any]:
    """The work folder's manifest: what the segments depend on (the source file, every setting that changes the
    encoded frames); a resume needs an equal one."""
    st = src.stat()
    return {
        "version": 1,
        "source": {"path": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "encoder": {**asdict(spec), "time_base": str(spec.time_base), "rate": str(spec.rate),
                    "fmt": {k: str(v) for k, v in asdict(spec.fmt).items()}},
        "container": container,
        "segment_frames": options.segment_frames,
        "max_frames": options.max_frames,
        "allow_partial": options.allow_partial,
        "resume_key": options.resume_key,
    }


def _finish_checks(run: _Run, scan: PrescanResult | None, vstream: av.video.stream.VideoStream,
                   work: WorkFolder) -> None:
    """Frame-count checks once every frame went through (strict mode raises for a short decode)."""
    options, dec = run.options, run.decoder
    frames = max(dec.frames_in, work.frames_done)
    if scan is None and options.max_frames is None and vstream.frames and frames < vstream.frames:
        dec.damaged(f"only {frames} of {vstream.frames} frames decoded")
    if (options.max_frames is None and scan is not None and scan.declared_frames
            and frames != scan.declared_frames and not dec.truncated):
        dec.warnings.append(f"decoded {frames} frames, the container declares {scan.declared_frames}")


def write_output(target: OutputTarget, src: Path, vstream: av.video.stream.VideoStream, spec: EncoderSpec,
                 segments: list[SegmentInfo]) -> tuple[int, StreamPlan]:
    """Join the segments and the input's other streams into `target.dst` (atomic)."""
    if not segments:
        raise InputError(f"{src}: no decodable video frames")
    last_end = max((s.last_end for s in segments if s.last_end is not None), default=None)
    cutoff = float(last_end * spec.time_base) if last_end is not None else None
    with av.open(str(src), metadata_errors="ignore") as inp, atomic_write_path(target.dst) as tmp:
        out, ostream, plan = open_output(target, tmp, inp, inp.streams[vstream.index], spec)
        try:
            written = join(out, ostream, segments, spec.time_base, inp, plan, cutoff)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
            raise
        try:
            out.close()
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{target.dst}: cannot finish writing ({exc})") from exc
    return written, plan


def _report(run: _Run, segments: list[SegmentInfo], spec: EncoderSpec, plan: StreamPlan, frames_out: int,
            expected: int | None, resumed: int, elapsed: float) -> VideoReport:
    dec = run.decoder
    frames_in = max(dec.frames_in, sum(s.frames for s in segments))
    warnings = list(dec.warnings) + plan.warnings
    if frames_out != frames_in:
        warnings.append(f"encoder wrote {frames_out} frames for {frames_in} input frames")
    firsts = [s.first_pts for s in segments if s.first_pts is not None]
    ends = [s.last_end for s in segments if s.last_end is not None]
    duration = float((max(ends) - min(firsts)) * spec.time_base) if firsts and ends else 0.0
    for w in warnings:
        log.warning("%s: %s", run.src, w)
    g = spec.geometry
    return VideoReport(
        src=run.src, dst=run.dst, frames_in=frames_in, frames_out=frames_out, frames_expected=expected,
        duration_s=duration, elapsed_s=elapsed, fps=run.frames_up / elapsed if elapsed > 0 else 0.0,
        in_size=(spec.fmt.width, spec.fmt.height), out_size=(g.width, g.height), padded=(g.pad_w, g.pad_h),
        copied_streams=list(plan.copied), dropped_streams=list(plan.dropped), truncated=dec.truncated,
        warnings=warnings, resumed_frames=resumed, codec=spec.codec,
    )
