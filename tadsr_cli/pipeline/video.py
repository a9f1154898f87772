"""Streaming video upscaling with PyAV: decode -> upscale -> encode, three stages running concurrently.

    reader thread ──(frames + passthrough packets, bounded)──> caller thread: upscaler ──(bounded)──> writer thread

* Memory is bounded by `VideoOptions.queue_size` frames per queue (plus a bounded number of small packets),
  whatever the length of the video. Errors in any stage stop all stages; threads are always joined.
* The caller's thread runs the upscaler, so Ctrl-C (KeyboardInterrupt) lands there; the other stages stop, the
  temporary output is removed and the interrupt is re-raised.
* Audio, subtitle, data and attachment streams (and extra video streams such as cover art) are remuxed
  untouched (packets copied byte for byte, stream metadata and disposition kept; container metadata and chapters
  copied). A stream the output container cannot hold (e.g. KLV/`mebx` data in MP4, `mov_text` in Matroska) is
  dropped with a warning in the report instead of failing the file.
* Timestamps: every output frame keeps its input pts (in the input stream's time base, rescaled by the muxer),
  so variable-frame-rate input stays VFR; frame count is exact (no drops, no duplicates).
* Colour: range/primaries/transfer/matrix tags are copied from the input to the encoder and to every frame, and
  the RGB<->YUV conversions use the input's matrix and range, so colours do not shift.
* Rotation: the input's display matrix (rotation and flips) is written to the output stream unchanged; pixels
  are not rotated.
* Odd output sizes: subsampled pixel formats (yuv420p needs even width and height) get the missing row/column
  *padded* on the right/bottom by repeating the edge pixels. Padding (rather than cropping) keeps every upscaled
  pixel; the report says when it happened.
* Truncated/damaged input: strict by default. A demux-only prescan compares the file with what its container
  declares and raises `InputError` before any upscaling; `VideoOptions(allow_partial=True)` instead upscales the
  decodable part and records a warning (`report.truncated`).
* Output is atomic: written to a temp file next to `dst` and renamed on success (`pipeline.atomic`). MP4/MOV
  outputs get `+faststart` (index first).
* Small print: empty `mov_text` gap samples are not copied into MP4/MOV (that muxer writes its own, identical
  ones); a muxer may shift *all* streams together to avoid negative timestamps (Matroska does), sync is kept;
  a mid-stream resolution change is resized to the first frame's size (one output size), with a warning;
  RGB input (PNG/QuickTime-RLE video) is encoded with the default YUV matrix, tagged unspecified.
* Not carried (PyAV 18 cannot set them): HDR mastering-display / content-light-level side data and other
  per-frame side data (closed captions A53, SEI). Colour tags, including PQ/HLG transfer, are carried.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.container
import av.error
import av.sidedata.sidedata
import av.video.stream
import numpy as np

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError, TadsrError
from tadsr_cli.pipeline.video_probe import (
    VIDEO_EXTENSIONS,
    PrescanResult,
    frame_rate,
    is_video,
    open_video,
    prescan,
)

__all__ = ["VIDEO_EXTENSIONS", "VideoOptions", "VideoReport", "is_video", "upscale_video"]

log = logging.getLogger(__name__)

# Tags that describe the old encode/stream and would be wrong on the new one.
_STALE_TAGS = {
    "encoder",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "creation_time_raw",
    "duration",
    "number_of_frames",
    "number_of_bytes",
    "bps",
    "_statistics_tags",
    "_statistics_writing_app",
    "_statistics_writing_date_utc",
}
_STALE_VIDEO_TAGS = _STALE_TAGS | {"vendor_id"}
_SPC_RGB = 0  # AVCOL_SPC_RGB
_UNSPECIFIED = 2  # AVCOL_SPC/PRI/TRC_UNSPECIFIED
_PACKET_SLACK = 256  # passthrough packets that may wait in a queue (they are small)
_POLL_S = 0.1


class FrameUpscaler(Protocol):
    scale: int

    def upscale(self, rgb: np.ndarray) -> np.ndarray: ...


@dataclass
class VideoOptions:
    """Output encoding and pipeline settings. Defaults: H.264 (libx264) CRF 18, preset medium, yuv420p."""

    codec: str = "libx264"
    crf: int | None = 18  # used when the encoder has a `crf` option (x264, x265, vpx, svt-av1, ...)
    preset: str | None = "medium"  # used when the encoder has a `preset` option
    pix_fmt: str = "yuv420p"  # "auto": yuv420p, or yuv420p10le when the input has more than 8 bits
    container_format: str | None = None  # None: from the output extension (same as the input by default)
    queue_size: int = 4  # frames buffered between stages (per queue)
    max_frames: int | None = None  # stop after this many frames (previews); other streams are cut to match
    allow_partial: bool = False  # truncated/damaged input: upscale what decodes instead of raising InputError
    prescan: bool = True  # demux-only pass first: exact frame count for progress + early truncation check
    codec_options: dict[str, str] = field(
        default_factory=dict
    )  # extra encoder options, e.g. {"tune": "film"}
    container_options: dict[str, str] = field(default_factory=dict)  # extra muxer options
    faststart: bool = True  # MP4/MOV: move the index to the front (playable while downloading)


@dataclass
class VideoReport:
    src: Path
    dst: Path
    frames_in: int  # frames decoded and upscaled
    frames_out: int  # video packets written (one per frame)
    frames_expected: int | None  # from the prescan / container, None if unknown
    duration_s: float  # media duration of the written video (last frame end - first frame start)
    elapsed_s: float  # wall time
    fps: float  # frames_out / elapsed_s, end to end
    in_size: tuple[int, int]  # (width, height)
    out_size: tuple[int, int]  # (width, height) as encoded, after padding
    padded: tuple[int, int] = (0, 0)  # (columns, rows) added on the right/bottom for the pixel format
    copied_streams: list[str] = field(default_factory=list)  # "1:audio:aac", ...
    dropped_streams: list[str] = field(default_factory=list)
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


_END = object()


class _Channel:
    """A FIFO between two stages with separate bounds for frames (big) and packets (small); polls `stop`."""

    def __init__(self, max_frames: int, stop: threading.Event) -> None:
        self._q: queue.Queue[tuple[Any, threading.Semaphore]] = queue.Queue()
        self._frames = threading.Semaphore(max(1, max_frames))
        self._packets = threading.Semaphore(_PACKET_SLACK)
        self._stop = stop

    def put(self, item: Any, is_frame: bool) -> None:
        sem = self._frames if is_frame else self._packets
        while not sem.acquire(timeout=_POLL_S):
            if self._stop.is_set():
                raise _Stopped
        self._q.put((item, sem))

    def get(self) -> Any:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                item, sem = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            sem.release()
            return item


@dataclass
class _Frame:
    rgb: np.ndarray
    pts: int
    duration: int


@dataclass
class _Packet:
    packet: av.Packet


@dataclass
class _VideoFormat:
    """What the writer needs to know about the input picture to encode a faithful output."""

    width: int
    height: int
    bits: int
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    display_matrix: tuple[int, ...] | None
    sample_aspect_ratio: Fraction | None


def _frame_format(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> _VideoFormat:
    comps = frame.format.components
    bits = max((c.bits for c in comps), default=8)
    matrix = None
    with contextlib.suppress(KeyError, ValueError, TypeError):
        sd = frame.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]
        raw = bytes(sd)
        if len(raw) >= 36:
            matrix = struct.unpack("=9i", raw[:36])
    cc = stream.codec_context
    colorspace = int(frame.colorspace if frame.colorspace is not None else cc.colorspace or _UNSPECIFIED)
    if frame.format.is_rgb or colorspace == _SPC_RGB:
        colorspace = _UNSPECIFIED  # RGB input: the YUV output gets the default matrix, tagged unspecified
    sar = None
    with contextlib.suppress(AttributeError, ZeroDivisionError):
        sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    return _VideoFormat(
        width=frame.width,
        height=frame.height,
        bits=bits,
        color_range=int(frame.color_range or cc.color_range or 0),
        colorspace=colorspace,
        color_primaries=int(frame.color_primaries or cc.color_primaries or _UNSPECIFIED),
        color_trc=int(frame.color_trc or cc.color_trc or _UNSPECIFIED),
        display_matrix=matrix,
        sample_aspect_ratio=sar,
    )


def _to_rgb(frame: av.VideoFrame, bits: int) -> np.ndarray:
    """Decoded frame -> HxWx3 float32 in [0, 1], converted with the frame's own matrix and range."""
    fmt = "rgb48le" if bits > 8 else "rgb24"
    arr = frame.to_ndarray(format=fmt, src_color_range=int(frame.color_range or 0) or None)
    scale = np.float32(1.0 / (65535.0 if bits > 8 else 255.0))
    return arr.astype(np.float32) * scale


def _is_rgb_family(pix_fmt: str) -> bool:
    try:
        return bool(av.VideoFormat(pix_fmt).is_rgb)
    except (ValueError, av.FFmpegError):
        return False


def _format_geometry(pix_fmt: str) -> tuple[int, int, int]:
    """(bits per component, width multiple, height multiple) that `pix_fmt` needs (chroma subsampling)."""
    try:
        desc = av.VideoFormat(pix_fmt, 64, 64)
    except (ValueError, av.FFmpegError) as exc:
        raise OutputError(f"unknown pixel format {pix_fmt!r}") from exc
    comps = desc.components
    bits = max((c.bits for c in comps), default=8)
    chroma = [c for c in comps if getattr(c, "is_chroma", False)]
    mw = max((64 // max(1, c.width) for c in chroma), default=1)
    mh = max((64 // max(1, c.height) for c in chroma), default=1)
    return bits, mw, mh


@dataclass
class _Encoder:
    """The output video stream and what is needed to turn upscaled RGB into encoder frames."""

    stream: av.video.stream.VideoStream
    pix_fmt: str
    bits: int
    width: int  # encoded size (after padding)
    height: int
    pad_w: int
    pad_h: int
    fmt: _VideoFormat
    time_base: Fraction

    def make_frame(self, item: _Frame) -> av.VideoFrame:
        rgb = item.rgb
        if self.pad_w or self.pad_h:
            rgb = np.pad(rgb, ((0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        if self.bits > 8:
            arr = np.clip(rgb * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb48le")
        else:
            arr = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        f = self.fmt
        if _is_rgb_family(self.pix_fmt):
            out = frame.reformat(format=self.pix_fmt)
        else:
            out = frame.reformat(
                format=self.pix_fmt,
                dst_colorspace=f.colorspace if f.colorspace != _UNSPECIFIED else None,
                dst_color_range=f.color_range or None,
            )
            out.colorspace = f.colorspace
            out.color_range = f.color_range
        out.color_primaries = f.color_primaries
        out.color_trc = f.color_trc
        out.pts = item.pts
        out.time_base = self.time_base
        if item.duration:
            with contextlib.suppress(AttributeError, TypeError):
                out.duration = item.duration
        return out


def _filtered(meta: dict[str, str], stale: set[str]) -> dict[str, str]:
    return {
        k: v for k, v in meta.items() if k.lower() not in stale and not k.upper().startswith("_STATISTICS")
    }


def _check_dst(src: Path, dst: Path) -> None:
    if dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output would overwrite the input")


def _choose_pix_fmt(options: VideoOptions, bits: int) -> str:
    if options.pix_fmt == "auto":
        return "yuv420p10le" if bits > 8 else "yuv420p"
    return options.pix_fmt


def _encoder_codec(options: VideoOptions) -> av.Codec:
    try:
        return av.Codec(options.codec, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise OutputError(f"video encoder {options.codec!r} is not available in this FFmpeg build") from exc


def _pad_to(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


class _Run:
    """State of one `upscale_video` call (kept off the module: no global state)."""

    def __init__(
        self,
        src: Path,
        dst: Path,
        upscaler: FrameUpscaler,
        options: VideoOptions,
        progress: Callable[[int, int | None], None] | None,
    ) -> None:
        self.src, self.dst, self.upscaler, self.options, self.progress = src, dst, upscaler, options, progress
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.warnings: list[str] = []
        self.frames_in = 0
        self.frames_up = 0
        self.frames_out = 0
        self.first_pts: int | None = None
        self.last_end: int | None = None
        self.decode_errors = 0
        self.truncated = False
        self.copied: list[str] = []
        self.dropped: list[str] = []
        self.regenerated_gaps: set[int] = set()  # input streams whose empty gap samples the muxer re-creates
        self.resized = 0  # frames resized after a mid-stream resolution change

    # ---- reader -------------------------------------------------------------------------------------------
    def items(
        self,
        inp: av.container.InputContainer,
        vstream: av.video.stream.VideoStream,
        passthrough: dict[int, Any],
    ) -> Iterator[_Packet | av.VideoFrame]:
        """Demux the input; yield decoded video frames and passthrough packets, in file order.

        With `max_frames`, passthrough packets are held back until the decoded video has caught up with them
        (decoders lag behind the demuxer), so that the preview's other streams end where its video ends.
        """
        vindex = vstream.index
        tb = vstream.time_base or Fraction(1, 1)
        default_dur = max(1, round(1 / (frame_rate(vstream) * tb)))
        max_frames = self.options.max_frames
        cutoff: float | None = None  # seconds; set once max_frames is reached
        video_time = float("-inf")  # start of the latest decoded frame, seconds
        held: deque[tuple[float, _Packet]] = deque()
        last_pts: int | None = None
        demux = inp.demux()
        while True:
            packet: av.Packet | None
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                self._damaged(f"read error after {self.frames_in} frames ({exc})")
                frames = self._safe_decode(vstream, None)
                packet = None
            else:
                frames = []
                if packet.stream_index == vindex:
                    if cutoff is None:
                        frames = self._safe_decode(vstream, packet)
                elif packet.stream_index in passthrough and packet.size > 0:
                    ts = packet.pts if packet.pts is not None else packet.dts
                    t = float(ts * packet.time_base) if ts is not None and packet.time_base else video_time
                    if max_frames is None:
                        yield _Packet(packet)
                    elif cutoff is not None:
                        if t >= cutoff + 5.0:
                            break  # well past the preview's end in every interleaved stream
                        if t < cutoff:
                            yield _Packet(packet)
                    else:
                        held.append((t, _Packet(packet)))
                        if len(held) > _PACKET_SLACK * 8:  # video far behind (or gone): stop holding
                            yield held.popleft()[1]
            for frame in frames:
                if cutoff is not None:
                    break
                pts = frame.pts
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + default_dur
                elif last_pts is not None and pts <= last_pts:
                    pts = (
                        last_pts + 1
                    )  # encoders refuse non-increasing pts; keep the frame, nudge by one tick
                last_pts = pts
                frame.pts = pts
                video_time = max(video_time, float(pts * tb))
                while held and held[0][0] <= video_time:
                    yield held.popleft()[1]
                yield frame
                self.frames_in += 1
                if max_frames is not None and self.frames_in >= max_frames:
                    cutoff = float((pts + (frame.duration or default_dur)) * tb)
            if cutoff is not None:
                while held:
                    t, item = held.popleft()
                    if t < cutoff:
                        yield item
            if packet is None:
                break
        while held:  # the video ended before max_frames
            yield held.popleft()[1]

    def _safe_decode(
        self, vstream: av.video.stream.VideoStream, packet: av.Packet | None
    ) -> list[av.VideoFrame]:
        try:
            return vstream.decode(packet)
        except av.error.EOFError:  # decoder already drained (flush packet seen twice)
            return []
        except av.FFmpegError as exc:
            self.decode_errors += 1
            self._damaged(f"decode error at frame {self.frames_in + 1} ({exc})")
            return []

    def _damaged(self, detail: str) -> None:
        self.truncated = True
        if not self.options.allow_partial:
            raise InputError(f"{self.src}: damaged or truncated video: {detail}")
        self.warnings.append(f"damaged input, kept the decodable part: {detail}")

    def reader(self, gen: Iterator[Any], prelude: list[Any], chan: _Channel, fmt: _VideoFormat) -> None:
        try:
            for obj in _chain(prelude, gen):
                if self.stop.is_set():
                    return
                if isinstance(obj, av.VideoFrame):
                    if (obj.width, obj.height) != (fmt.width, fmt.height):
                        # Mid-stream resolution change: one output size, so rescale to the first frame's size.
                        if not self.resized:
                            self.warnings.append(
                                f"resolution changes mid-stream ({fmt.width}x{fmt.height} -> "
                                f"{obj.width}x{obj.height}); such frames are resized to {fmt.width}x{fmt.height}"
                            )
                        self.resized += 1
                        pts, dur = obj.pts, obj.duration
                        obj = obj.reformat(width=fmt.width, height=fmt.height, interpolation="BICUBIC")
                        obj.pts, obj.duration = pts, dur
                    rgb = _to_rgb(obj, fmt.bits)
                    chan.put(_Frame(rgb, int(obj.pts), int(obj.duration or 0)), is_frame=True)
                else:
                    chan.put(obj, is_frame=False)
            chan.put(_END, is_frame=False)
        except _Stopped:
            pass
        except av.FFmpegError as exc:
            self.fail(InputError(f"{self.src}: cannot decode video ({exc})"))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller's thread
            self.fail(exc)

    # ---- writer -------------------------------------------------------------------------------------------
    def writer(
        self, out: av.container.OutputContainer, enc: _Encoder, chan: _Channel, stream_map: dict[int, Any]
    ) -> None:
        try:
            while True:
                item = chan.get()
                if item is _END:
                    break
                if isinstance(item, _Frame):
                    frame = enc.make_frame(item)
                    for pkt in enc.stream.encode(frame):
                        out.mux(pkt)
                        self.frames_out += 1
                    end = item.pts + (item.duration or 0)
                    self.first_pts = item.pts if self.first_pts is None else min(self.first_pts, item.pts)
                    self.last_end = end if self.last_end is None else max(self.last_end, end)
                else:
                    pkt = item.packet
                    if (
                        pkt.stream_index in self.regenerated_gaps
                        and pkt.size == 2
                        and bytes(pkt) == b"\x00\x00"
                    ):
                        continue  # an empty mov_text "gap" sample: the MP4 muxer writes its own
                    pkt.stream = stream_map[pkt.stream_index]
                    out.mux(pkt)
            for pkt in enc.stream.encode(None):
                out.mux(pkt)
                self.frames_out += 1
        except _Stopped:
            pass
        except av.FFmpegError as exc:
            self.fail(OutputError(f"{self.dst}: encoding failed ({exc})"))
        except OSError as exc:
            self.fail(OutputError(f"{self.dst}: cannot write ({exc.strerror or exc})"))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller's thread
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    first.clear()
    yield from rest


def _add_passthrough(out: av.container.OutputContainer, s: Any) -> Any:
    """Copy a non-main stream's parameters (no re-encoding); returns the new output stream."""
    o = out.add_stream_from_template(s, opaque=True)
    o.metadata.clear()
    o.metadata.update(_filtered(dict(s.metadata), _STALE_TAGS))
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        o.disposition = s.disposition
    return o


def _build_output(
    run: _Run,
    tmp: Path,
    inp: av.container.InputContainer,
    vstream: av.video.stream.VideoStream,
    fmt: _VideoFormat,
    skip_types: frozenset[str],
) -> tuple[av.container.OutputContainer, _Encoder, dict[int, Any]]:
    """Open the temp output with the encoder and the passthrough streams, in input order; write the header."""
    options = run.options
    codec = _encoder_codec(options)
    pix_fmt = _choose_pix_fmt(options, fmt.bits)
    supported = {f.name for f in (codec.video_formats or [])}
    if supported and pix_fmt not in supported:
        raise OutputError(
            f"encoder {codec.name} cannot write pixel format {pix_fmt} "
            f"(supported: {', '.join(sorted(supported))})"
        )
    out_bits, mw, mh = _format_geometry(pix_fmt)
    sw = run.upscaler.scale * fmt.width
    sh = run.upscaler.scale * fmt.height
    ow, oh = _pad_to(sw, mw), _pad_to(sh, mh)

    container_options = dict(options.container_options)
    suffix = run.dst.suffix.lower()
    fmt_name = options.container_format
    if fmt_name is None and not suffix:  # no extension: the input's container
        names = inp.format.name.split(",")
        fmt_name = "mp4" if "mp4" in names else "matroska" if "matroska" in names else names[0]
    if options.faststart and (
        fmt_name in {"mp4", "mov"} or (fmt_name is None and suffix in {".mp4", ".mov", ".m4v"})
    ):
        container_options.setdefault("movflags", "+faststart")
    try:
        out = av.open(str(tmp), "w", format=fmt_name, container_options=container_options)
    except (av.FFmpegError, ValueError) as exc:
        raise OutputError(
            f"{run.dst}: cannot create output (unknown container for {suffix or 'no extension'}?: {exc})"
        ) from exc
    try:
        try:
            tb = vstream.time_base or Fraction(1, 1000)
            rate = frame_rate(vstream)
            ostream = out.add_stream(codec.name, rate=rate)
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"{run.dst}: the {out.format.name} container cannot hold {codec.name} video "
                f"(choose another codec or extension)"
            ) from exc
        cc = ostream.codec_context
        cc.width, cc.height, cc.pix_fmt = ow, oh, pix_fmt
        cc.time_base = tb
        ostream.time_base = tb
        cc.framerate = rate
        if not _is_rgb_family(pix_fmt):
            cc.color_range = fmt.color_range
            cc.colorspace = fmt.colorspace
        cc.color_primaries = fmt.color_primaries
        cc.color_trc = fmt.color_trc
        if fmt.sample_aspect_ratio:
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                cc.sample_aspect_ratio = fmt.sample_aspect_ratio
        private = {o.name for o in cc.supported_options.private}
        copts: dict[str, str] = {}
        if options.crf is not None and "crf" in private:
            copts["crf"] = str(options.crf)
        if options.preset is not None and "preset" in private:
            copts["preset"] = str(options.preset)
        copts.update({k: str(v) for k, v in options.codec_options.items()})
        cc.options = copts
        try:
            cc.open()
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"cannot open the {codec.name} encoder ({pix_fmt} {ow}x{oh}, {copts}): {exc}"
            ) from exc
        if fmt.display_matrix is not None:
            ostream.set_display_matrix(list(fmt.display_matrix))
        ostream.metadata.update(_filtered(dict(vstream.metadata), _STALE_VIDEO_TAGS))
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            ostream.disposition = vstream.disposition

        stream_map: dict[int, Any] = {}
        for s in inp.streams:
            if s.index == vstream.index:
                continue
            label = f"{s.index}:{s.type}:{s.codec_context.name if s.codec_context else (s.name or 'none')}"
            if s.type not in {"audio", "subtitle", "data", "attachment", "video"}:
                run.dropped.append(label)
                run.warnings.append(f"stream {label} not copied: unknown stream type")
                continue
            if s.type in skip_types:
                run.dropped.append(label)
                run.warnings.append(f"stream {label} not copied: the {out.format.name} muxer refused it")
                continue
            try:
                stream_map[s.index] = _add_passthrough(out, s)
                run.copied.append(label)
                if (
                    s.type == "subtitle"
                    and s.codec_context
                    and s.codec_context.name == "mov_text"
                    and {"mp4", "mov", "ipod", "3gp"} & set(out.format.name.split(","))
                ):
                    run.regenerated_gaps.add(s.index)
            except (av.FFmpegError, ValueError, TypeError) as exc:
                run.dropped.append(label)
                run.warnings.append(f"stream {label} not copied: {exc}")

        out.metadata.update(_filtered(dict(inp.metadata), _STALE_TAGS))
        with contextlib.suppress(AttributeError, ValueError, TypeError, av.FFmpegError):
            chapters = inp.chapters()
            if chapters:
                out.set_chapters(chapters)
        try:
            out.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            raise _HeaderError(str(exc)) from exc
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()
        raise
    enc = _Encoder(ostream, pix_fmt, out_bits, ow, oh, ow - sw, oh - sh, fmt, tb)
    return out, enc, stream_map


class _HeaderError(Exception):
    """The muxer refused the stream set (usually an exotic data stream); retried without optional streams."""


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
    if options.queue_size < 1:
        raise ValueError("queue_size must be >= 1")
    _check_dst(src, dst)
    t0 = time.perf_counter()
    run = _Run(src, dst, upscaler, options, progress)

    inp, vstream = open_video(src)
    try:
        vstream.thread_type = "AUTO"
        scan: PrescanResult | None = None
        if options.prescan:
            scan = prescan(src, vstream.index, vstream)
            if scan.packets == 0:
                raise InputError(f"{src}: no video frames (the video stream is empty{_why_empty(scan)})")
            if scan.problem:
                run._damaged(scan.problem)
        expected = scan.packets if scan is not None and scan.packets else (vstream.frames or None)
        if scan is not None and scan.declared_frames and not scan.problem:
            expected = scan.declared_frames
        if options.max_frames is not None:
            expected = min(expected, options.max_frames) if expected else options.max_frames

        passthrough_all = {s.index: s for s in inp.streams if s.index != vstream.index}
        gen = run.items(inp, vstream, passthrough_all)
        prelude: list[Any] = []
        first: av.VideoFrame | None = None
        for obj in gen:
            prelude.append(obj)
            if isinstance(obj, av.VideoFrame):
                first = obj
                break
        if first is None:
            raise InputError(f"{src}: no decodable video frames")
        fmt = _frame_format(first, vstream)
        with atomic_write_path(dst) as tmp:
            out = enc = None
            # A muxer may refuse a stream only when writing the header (e.g. an unknown data codec in MP4):
            # retry without the optional stream kinds rather than failing the file.
            attempts = [frozenset(), frozenset({"data"}), frozenset({"data", "attachment", "subtitle"})]
            base_warnings = list(run.warnings)
            for i, skip in enumerate(attempts):
                run.copied.clear()
                run.dropped.clear()
                run.regenerated_gaps.clear()
                run.warnings[:] = base_warnings
                try:
                    out, enc, stream_map = _build_output(run, tmp, inp, vstream, fmt, skip)
                    break
                except _HeaderError as exc:
                    if i == len(attempts) - 1:
                        raise OutputError(f"{dst}: cannot write the output container ({exc})") from exc
            assert out is not None and enc is not None
            # Passthrough packets of dropped streams are filtered by the stream map.
            prelude = [
                o for o in prelude if not isinstance(o, _Packet) or o.packet.stream_index in stream_map
            ]
            gen = _only_mapped(gen, stream_map)
            try:
                _pump(run, gen, prelude, out, enc, stream_map, fmt, expected)
            except BaseException:
                with contextlib.suppress(Exception):
                    out.close()
                raise
            try:
                out.close()
            except (av.FFmpegError, OSError) as exc:
                raise OutputError(f"{dst}: cannot finish writing ({exc})") from exc
            if (
                scan is None
                and options.max_frames is None
                and vstream.frames
                and run.frames_in < vstream.frames
            ):
                run._damaged(f"only {run.frames_in} of {vstream.frames} frames decoded")  # strict: raises
            if (
                options.max_frames is None
                and scan is not None
                and scan.declared_frames
                and run.frames_in != scan.declared_frames
                and not run.truncated
            ):
                run.warnings.append(
                    f"decoded {run.frames_in} frames, the container declares {scan.declared_frames}"
                )
            if run.frames_out != run.frames_in:
                run.warnings.append(f"encoder wrote {run.frames_out} frames for {run.frames_in} input frames")
    except OSError as exc:
        raise OutputError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
    finally:
        inp.close()

    elapsed = time.perf_counter() - t0
    tb = vstream.time_base or Fraction(1, 1)
    duration = (
        float((run.last_end - run.first_pts) * tb)
        if run.last_end is not None and run.first_pts is not None
        else 0.0
    )
    for w in run.warnings:
        log.warning("%s: %s", src, w)
    return VideoReport(
        src=src,
        dst=dst,
        frames_in=run.frames_in,
        frames_out=run.frames_out,
        frames_expected=expected,
        duration_s=duration,
        elapsed_s=elapsed,
        fps=run.frames_out / elapsed if elapsed > 0 else 0.0,
        in_size=(fmt.width, fmt.height),
        out_size=(enc.width, enc.height),
        padded=(enc.pad_w, enc.pad_h),
        copied_streams=list(run.copied),
        dropped_streams=list(run.dropped),
        truncated=run.truncated,
        warnings=list(run.warnings),
    )


def _why_empty(scan: PrescanResult) -> str:
    if scan.declared_frames:
        return f"; the container declares {scan.declared_frames} frames: the file is truncated"
    return ""


def _only_mapped(gen: Iterator[Any], stream_map: dict[int, Any]) -> Iterator[Any]:
    for obj in gen:
        if isinstance(obj, _Packet) and obj.packet.stream_index not in stream_map:
            continue
        yield obj


def _pump(
    run: _Run,
    gen: Iterator[Any],
    prelude: list[Any],
    out: av.container.OutputContainer,
    enc: _Encoder,
    stream_map: dict[int, Any],
    fmt: _VideoFormat,
    expected: int | None,
) -> None:
    """Run reader and writer threads around the upscaling loop in this thread; always join them."""
    opts = run.options
    to_up = _Channel(opts.queue_size, run.stop)
    to_enc = _Channel(opts.queue_size, run.stop)
    reader = threading.Thread(
        target=run.reader, args=(gen, prelude, to_up, fmt), name="tadsr-video-decode", daemon=True
    )
    writer = threading.Thread(
        target=run.writer, args=(out, enc, to_enc, stream_map), name="tadsr-video-encode", daemon=True
    )
    reader.start()
    writer.start()
    exp_shape: tuple[int, int, int] | None = None
    if run.progress is not None:
        run.progress(0, expected)
    try:
        while True:
            item = to_up.get()
            if item is _END:
                to_enc.put(_END, is_frame=False)
                break
            if isinstance(item, _Frame):
                up = run.upscaler.upscale(item.rgb)
                if exp_shape is None:
                    h, w = item.rgb.shape[:2]
                    s = run.upscaler.scale
                    exp_shape = (h * s, w * s, 3)
                if not isinstance(up, np.ndarray) or up.shape != exp_shape:
                    got = getattr(up, "shape", type(up).__name__)
                    raise TadsrError(f"upscaler returned {got}, expected an array of shape {exp_shape}")
                item = _Frame(up.astype(np.float32, copy=False), item.pts, item.duration)
                to_enc.put(item, is_frame=True)
                run.frames_up += 1
                if run.progress is not None:
                    run.progress(run.frames_up, expected)
            else:
                to_enc.put(item, is_frame=False)
        writer.join()
    except _Stopped:
        pass
    except BaseException as exc:
        run.fail(exc)
    finally:
        if run.errors:
            run.stop.set()
        # On success the reader has finished (it sent _END) and the writer is joined; on failure both poll stop.
        _join(run, reader, writer)
    if run.errors:
        raise run.errors[0]


def _join(run: _Run, *threads: threading.Thread) -> None:
    """Join the stage threads even if Ctrl-C arrives again meanwhile (then stop them and re-raise after)."""
    interrupted: BaseException | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join(_POLL_S)
            except BaseException as exc:  # a second KeyboardInterrupt while waiting
                interrupted = interrupted or exc
                run.stop.set()
    if interrupted is not None:
        raise interrupted
