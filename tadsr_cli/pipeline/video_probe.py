"""Video detection and input checks (content based, never by extension) for the streaming video pipeline.

* `is_video(path)`: PyAV can open it, it has a real video stream (cover art does not count), and either the
  container is not an image demuxer or, for image demuxers (GIF, APNG, ...), it holds more than one frame.
* `open_video(path)`: opens the input or raises one-line `InputError`s (missing, empty, unreadable, no video
  stream, still image).
* `prescan(...)`: a demux-only pass over the video packets (no decoding; fast) that counts frames for progress and
  detects truncated or damaged files *before* hours of upscaling are spent on them.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream
import av.video.stream

from tadsr_cli.base.errors import InputError
from tadsr_cli.pipeline.paths import check_input_file

# File extensions commonly used for video; only a hint for front-ends (messages), detection is by content.
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".ts",
        ".m2ts",
        ".mts",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".y4m",
    }
)

# libavformat demuxers that read still (or animated) pictures rather than video containers.
_IMAGE_DEMUXERS = frozenset(
    {
        "image2",
        "image2pipe",
        "gif",
        "apng",
        "webp",
        "ico",
        "jpegxl_anim",
        "alias_pix",
        "brender_pix",
        "imagepipe",
    }
)


def _is_image_demuxer(fmt_name: str) -> bool:
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in fmt_name.split(","))


def _main_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is not attached cover art."""
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


def _count_frames(container: av.container.InputContainer, stream: av.stream.Stream, limit: int) -> int:
    n = 0
    with contextlib.suppress(av.FFmpegError):
        for _ in container.decode(stream):
            n += 1
            if n >= limit:
                break
    return n


# First bytes of video containers (a damaged one is still reported as a video, with what is wrong with it).
_CONTAINER_MAGIC = (b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
                    b"YUV4MPEG2", b"0&\xb2u\x8ef\xcf\x11")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def sniff(path: Path) -> str | None:
    """'video' / 'image' from the first bytes (container or picture signatures), None when unknown or unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip") or head.startswith(_CONTAINER_MAGIC):
        return "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if len(head) >= 1 and head[0] == 0x47 and path.suffix.lower() in VIDEO_EXTENSIONS:  # MPEG-TS sync byte
        return "video"
    return None


def is_video(path: Path) -> bool:
    """True when `path` holds video (by content). Still images (PNG, JPEG, WebP, ...) and unreadable files: False."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeError):
        return False
    try:
        if not isinstance(container, av.container.InputContainer):
            return False
        stream = _main_video_stream(container)
        if stream is None:
            return False
        if _is_image_demuxer(container.format.name):
            return _count_frames(container, stream, 2) > 1
        return True
    finally:
        container.close()


def open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` for decoding and return (container, main video stream), or raise a one-line `InputError`."""
    path = Path(path)
    check_input_file(path)  # missing, loop, folder, FIFO/device, empty, unreadable: one-line InputError
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError as exc:
        raise InputError(f"{path}: cannot read (permission denied)") from exc
    except (av.FFmpegError, OSError, ValueError, UnicodeError) as exc:
        raise InputError(
            f"{path}: not a readable video (truncated, damaged or not a media file: {_reason(exc)})"
        ) from exc
    try:
        stream = _main_video_stream(container)
        if stream is None:
            raise InputError(f"{path}: {_no_video(container)}")
        if _is_image_demuxer(container.format.name):
            with av.open(str(path), metadata_errors="ignore") as probe:
                frames = _count_frames(probe, _main_video_stream(probe), 2)  # type: ignore[arg-type]
            if frames <= 1:
                raise InputError(f"{path}: a still image, not a video")
    except BaseException:
        container.close()
        raise
    return container, stream


def _no_video(container: av.container.InputContainer) -> str:
    """Why a container that opened has no usable video stream."""
    kinds = sorted({s.type for s in container.streams})
    if not kinds:
        return f"no video frames (the {container.format.name.split(',')[0]} container holds no streams: " \
               "an empty or zero-frame video)"
    if container.streams.video:
        return "no video stream (only attached cover art)"
    if kinds == ["audio"]:
        return "no video stream (audio only)"
    return f"no video stream (only {', '.join(kinds)} streams)"


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the errno prefix and file name repetition."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip().rstrip(".")


_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def declared_duration(stream: av.stream.Stream) -> float | None:
    """The stream's declared duration in seconds (container header or Matroska DURATION tag), if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        m = _DURATION_TAG.match(tag.strip())
        if m:
            return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """Best guess of the nominal frame rate (average, else guessed, else 25)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate)
    return Fraction(25)


@dataclass
class PrescanResult:
    """Outcome of the demux-only pass over the main video stream."""

    packets: int  # non-empty video packets (= frames for nearly every codec)
    start_s: float | None  # first video timestamp, seconds
    end_s: float | None  # end of the last video packet (pts + duration), seconds
    declared_frames: int | None  # frame count the container declares (MP4/MOV sample tables)
    declared_duration_s: float | None  # duration the container declares for the video stream
    problem: str | None  # why the file looks truncated or damaged; None if it looks complete


def prescan(path: Path, stream_index: int, stream: av.video.stream.VideoStream) -> PrescanResult:
    """Demux (no decoding) the main video stream of `path` and compare it with what the container declares."""
    packets = 0
    start: float | None = None
    end: float | None = None
    problem: str | None = None
    tb = stream.time_base or Fraction(1, 1)
    frame_dur = 1.0 / float(frame_rate(stream))
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            s = c.streams[stream_index]
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue
                packets += 1
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                if ts is None:
                    continue
                t0 = float(ts * tb)
                start = t0 if start is None else min(start, t0)
                dur = float(pkt.duration * tb) if pkt.duration else frame_dur
                end = t0 + dur if end is None else max(end, t0 + dur)
    except av.FFmpegError as exc:
        problem = f"read error after {packets} frames ({_reason(exc)})"
    declared_frames = stream.frames or None
    declared_dur = declared_duration(stream)
    if problem is None and declared_frames and packets < declared_frames:
        problem = f"only {packets} of {declared_frames} frames present"
    if problem is None and declared_dur and end is not None:
        # Two frames of slack: muxers round durations, and some measure from the first pts, some from zero
        # (comparing the absolute end can only miss a truncation, never report a false one).
        if end + 2 * frame_dur < declared_dur - 0.05:
            problem = f"video stops at {end:.2f} s of {declared_dur:.2f} s"
    if problem is None and packets == 0:
        problem = "no video frames"
    return PrescanResult(packets, start, end, declared_frames, declared_dur, problem)
