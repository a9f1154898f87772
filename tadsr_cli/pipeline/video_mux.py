"""The output container: the upscaled video stream plus the input's other streams, remuxed untouched.

* Audio, subtitle, data and attachment streams (and extra video streams such as cover art) are copied byte for byte
  (stream metadata and disposition kept; container metadata and chapters copied). A stream the output container
  cannot hold (AAC in WebM, `mov_text` in Matroska, KLV data in MP4) is dropped with a one-line warning and the rest
  goes on.
* The video packets come from the finished segments (`video_segments`); decode timestamps are recomputed over the
  joined stream (each segment's encoder starts its own), so they increase across segment boundaries.
* Small print: empty `mov_text` gap samples are not copied into MP4/MOV (that muxer writes its own, identical ones);
  a muxer may shift *all* streams together to avoid negative timestamps (Matroska does), sync is kept. MP4/MOV
  outputs get `+faststart` (index first). The display matrix (rotation, flips) is written unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.video.stream

from tadsr_cli.base.errors import OutputError
from tadsr_cli.pipeline.video_format import EncoderSpec
from tadsr_cli.pipeline.video_segments import SegmentInfo, extradata_hash, read_packets

# Tags that describe the old encode/stream and would be wrong on the new one.
_STALE_TAGS = {
    "encoder", "major_brand", "minor_version", "compatible_brands", "creation_time_raw", "duration",
    "number_of_frames", "number_of_bytes", "bps", "_statistics_tags", "_statistics_writing_app",
    "_statistics_writing_date_utc",
}
_STALE_VIDEO_TAGS = _STALE_TAGS | {"vendor_id"}
_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp"}
# Stream kinds given up, in this order, when a muxer refuses the stream set when writing its header.
_HEADER_ATTEMPTS = (frozenset(), frozenset({"data"}), frozenset({"data", "attachment", "subtitle"}),
                    frozenset({"data", "attachment", "subtitle", "audio"}))


class HeaderError(Exception):
    """The muxer refused the stream set (usually an exotic data stream or an audio codec it cannot hold)."""


@dataclass
class OutputTarget:
    """Where and how the output container is written."""

    dst: Path  # the final name (messages, extension)
    container_format: str | None  # None: from the extension (the input's container when there is none)
    container_options: dict[str, str] = field(default_factory=dict)
    faststart: bool = True


@dataclass
class StreamPlan:
    """What happened to the input's other streams."""

    stream_map: dict[int, Any] = field(default_factory=dict)  # input index -> output stream
    copied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    regenerated_gaps: set[int] = field(default_factory=set)  # input streams whose empty gap samples the muxer makes


def container_name(target: OutputTarget, inp: av.container.InputContainer) -> str | None:
    """The muxer to use: explicit, else None (libavformat guesses from the extension), else the input's."""
    if target.container_format is not None or target.dst.suffix:
        return target.container_format
    names = inp.format.name.split(",")
    return "mp4" if "mp4" in names else "matroska" if "matroska" in names else names[0]


def _filtered(meta: dict[str, str], stale: set[str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k.lower() not in stale and not k.upper().startswith("_STATISTICS")}


def _add_passthrough(out: av.container.OutputContainer, s: Any) -> Any:
    """Copy a non-main stream's parameters (no re-encoding); returns the new output stream."""
    o = out.add_stream_from_template(s, opaque=True)
    o.metadata.clear()
    o.metadata.update(_filtered(dict(s.metadata), _STALE_TAGS))
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        o.disposition = s.disposition
    return o


def _open(target: OutputTarget, tmp: Path, inp: av.container.InputContainer) -> av.container.OutputContainer:
    options = dict(target.container_options)
    suffix = target.dst.suffix.lower()
    name = container_name(target, inp)
    if target.faststart and (name in {"mp4", "mov"} or (name is None and suffix in {".mp4", ".mov", ".m4v"})):
        options.setdefault("movflags", "+faststart")
    try:
        return av.open(str(tmp), "w", format=name, container_options=options)
    except (av.FFmpegError, ValueError) as exc:
        raise OutputError(
            f"{target.dst}: cannot create output (unknown container for {suffix or 'no extension'}?: {exc})"
        ) from exc


def _build(target: OutputTarget, tmp: Path, inp: av.container.InputContainer, vstream: av.video.stream.VideoStream,
           spec: EncoderSpec, skip: frozenset[str]) -> tuple[av.container.OutputContainer, Any, StreamPlan]:
    out = _open(target, tmp, inp)
    plan = StreamPlan()
    try:
        try:
            ostream = out.add_stream(spec.codec, rate=spec.rate)
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"{target.dst}: the {out.format.name} container cannot hold {spec.codec} video "
                              f"(choose another codec or extension)") from exc
        ostream.time_base = spec.time_base
        spec.configure(ostream.codec_context, global_header=False)  # the muxer already set the flag it needs
        if spec.fmt.display_matrix is not None:
            ostream.set_display_matrix(list(spec.fmt.display_matrix))
        ostream.metadata.update(_filtered(dict(vstream.metadata), _STALE_VIDEO_TAGS))
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            ostream.disposition = vstream.disposition
        for s in inp.streams:
            if s.index != vstream.index:
                _plan_stream(out, s, skip, plan)
        out.metadata.update(_filtered(dict(inp.metadata), _STALE_TAGS))
        with contextlib.suppress(AttributeError, ValueError, TypeError, av.FFmpegError):
            chapters = inp.chapters()
            if chapters:
                out.set_chapters(chapters)
        try:
            out.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            raise HeaderError(str(exc)) from exc
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()
        raise
    return out, ostream, plan


def _plan_stream(out: av.container.OutputContainer, s: Any, skip: frozenset[str], plan: StreamPlan) -> None:
    label = f"{s.index}:{s.type}:{s.codec_context.name if s.codec_context else (s.name or 'none')}"
    if s.type not in {"audio", "subtitle", "data", "attachment", "video"}:
        plan.dropped.append(label)
        plan.warnings.append(f"stream {label} not copied: unknown stream type")
        return
    if s.type in skip:
        plan.dropped.append(label)
        plan.warnings.append(f"stream {label} not copied: the {out.format.name} container cannot hold it")
        return
    try:
        plan.stream_map[s.index] = _add_passthrough(out, s)
        plan.copied.append(label)
        if (s.type == "subtitle" and s.codec_context and s.codec_context.name == "mov_text"
                and _MP4_FAMILY & set(out.format.name.split(","))):
            plan.regenerated_gaps.add(s.index)
    except (av.FFmpegError, ValueError, TypeError) as exc:
        plan.dropped.append(label)
        plan.warnings.append(f"stream {label} not copied: {exc}")


def open_output(target: OutputTarget, tmp: Path, inp: av.container.InputContainer,
                vstream: av.video.stream.VideoStream,
                spec: EncoderSpec) -> tuple[av.container.OutputContainer, Any, StreamPlan]:
    """Open `tmp` with the video stream and every other stream the container accepts; the header is written.

    A muxer may refuse a stream only when writing the header (e.g. an unknown data codec in MP4, AAC in WebM):
    then it is retried without the optional stream kinds rather than failing the file.
    """
    for i, skip in enumerate(_HEADER_ATTEMPTS):
        try:
            return _build(target, tmp, inp, vstream, spec, skip)
        except HeaderError as exc:
            if i == len(_HEADER_ATTEMPTS) - 1:
                raise OutputError(f"{target.dst}: cannot write the output container ({exc})") from exc
    raise AssertionError("unreachable")


def wants_global_header(out: av.container.OutputContainer) -> bool:
    return bool(out.format.flags & av.format.Flags.global_header.value)


# ---- joining ---------------------------------------------------------------------------------------------------
def _video_packets(ostream: Any, segments: list[SegmentInfo], tb: Fraction) -> Iterator[tuple[float, av.Packet]]:
    """Segment packets with decode timestamps recomputed over the whole stream.

    With reorder depth K (the largest of any segment), packet i gets dts = (i-K)-th smallest pts: increasing,
    never after its own pts. The first K packets are spread over the gap before the first pts, as encoders do.
    """
    expected = extradata_hash(ostream.codec_context)
    bad = [s.path.name for s in segments if s.extradata != expected]
    if bad:
        raise OutputError(f"video segments {', '.join(bad[:3])} were encoded with other encoder settings; "
                          "start over with --overwrite")
    order = [p for s in segments for p in sorted(s.pts)]
    depth = max((s.reorder_depth for s in segments), default=0)
    lead = order[depth] - order[0] if depth < len(order) else 0
    i = 0
    for seg in segments:
        for pts, _dts, duration, key, payload in read_packets(seg):
            pkt = av.Packet(payload)
            pkt.pts = pts
            pkt.dts = order[i - depth] if i >= depth else order[i] - lead
            pkt.duration = duration
            pkt.is_keyframe = key
            pkt.time_base = tb
            pkt.stream = ostream
            i += 1
            yield float(pkt.dts * tb), pkt


def _passthrough_packets(inp: av.container.InputContainer, plan: StreamPlan,
                         cutoff_s: float | None) -> Iterator[tuple[float, av.Packet]]:
    """The mapped streams' packets in file order, up to `cutoff_s` (a preview's end); stops at a read error."""
    streams = [inp.streams[i] for i in plan.stream_map]
    if not streams:
        return
    last = float("-inf")
    try:
        for pkt in inp.demux(*streams):
            if pkt.size == 0:
                continue
            ts = pkt.dts if pkt.dts is not None else pkt.pts
            t = float(ts * pkt.time_base) if ts is not None and pkt.time_base else last
            last = t
            if cutoff_s is not None:
                if t >= cutoff_s + 5.0:
                    return  # well past the preview's end in every interleaved stream
                pts = pkt.pts if pkt.pts is not None else ts
                if pts is not None and pkt.time_base and float(pts * pkt.time_base) >= cutoff_s:
                    continue
            if pkt.stream_index in plan.regenerated_gaps and pkt.size == 2 and bytes(pkt) == b"\x00\x00":
                continue  # an empty mov_text "gap" sample: the MP4 muxer writes its own
            pkt.stream = plan.stream_map[pkt.stream_index]
            yield t, pkt
    except av.FFmpegError:
        return  # damaged input: the decoding pass already reported (or refused) it


def join(out: av.container.OutputContainer, ostream: Any, segments: list[SegmentInfo], tb: Fraction,
         inp: av.container.InputContainer, plan: StreamPlan, cutoff_s: float | None) -> int:
    """Mux the segments' video and the passthrough packets, interleaved by time; returns video packets written."""
    video = _video_packets(ostream, segments, tb)
    other = _passthrough_packets(inp, plan, cutoff_s)
    nv, no = next(video, None), next(other, None)
    written = 0
    while nv is not None or no is not None:
        if no is None or (nv is not None and nv[0] <= no[0]):
            assert nv is not None
            out.mux(nv[1])
            written += 1
            nv = next(video, None)
        else:
            out.mux(no[1])
            no = next(other, None)
    return written
