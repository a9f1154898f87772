"""Picture formats for video: what the input frames are, the output geometry, encoder set-up, RGB <-> codec frames.

* Colour: range/primaries/transfer/matrix tags are copied from the input to the encoder and to every frame, and the
  RGB<->YUV conversions use the input's matrix and range, so colours do not shift. RGB input (PNG/QuickTime-RLE
  video) is encoded with the default YUV matrix, tagged unspecified.
* Geometry: at the model's scale, subsampled pixel formats (yuv420p needs even width and height) get the missing
  row/column *padded* on the right/bottom by repeating the edge pixels, which keeps every upscaled pixel. With an
  `outscale`, frames are resized after the model to the nearest size the pixel format allows (no padding).
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import av
import av.codec.context
import av.sidedata.sidedata
import av.video.stream
import numpy as np

from tadsr_cli.base.errors import OutputError
from tadsr_cli.pipeline.image_io import resize

SPC_RGB = 0  # AVCOL_SPC_RGB
UNSPECIFIED = 2  # AVCOL_SPC/PRI/TRC_UNSPECIFIED


class FrameUpscaler(Protocol):
    scale: int

    def upscale(self, rgb: np.ndarray) -> np.ndarray: ...


@dataclass
class VideoFormat:
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


def frame_format(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> VideoFormat:
    comps = frame.format.components
    bits = max((c.bits for c in comps), default=8)
    matrix = None
    with contextlib.suppress(KeyError, ValueError, TypeError):
        sd = frame.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]
        raw = bytes(sd)
        if len(raw) >= 36:
            matrix = struct.unpack("=9i", raw[:36])
    cc = stream.codec_context
    colorspace = int(frame.colorspace if frame.colorspace is not None else cc.colorspace or UNSPECIFIED)
    if frame.format.is_rgb or colorspace == SPC_RGB:
        colorspace = UNSPECIFIED  # RGB input: the YUV output gets the default matrix, tagged unspecified
    sar = None
    with contextlib.suppress(AttributeError, ZeroDivisionError):
        sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    return VideoFormat(
        width=frame.width,
        height=frame.height,
        bits=bits,
        color_range=int(frame.color_range or cc.color_range or 0),
        colorspace=colorspace,
        color_primaries=int(frame.color_primaries or cc.color_primaries or UNSPECIFIED),
        color_trc=int(frame.color_trc or cc.color_trc or UNSPECIFIED),
        display_matrix=matrix,
        sample_aspect_ratio=sar,
    )


def to_rgb(frame: av.VideoFrame, bits: int) -> np.ndarray:
    """Decoded frame -> HxWx3 float32 in [0, 1], converted with the frame's own matrix and range."""
    fmt = "rgb48le" if bits > 8 else "rgb24"
    arr = frame.to_ndarray(format=fmt, src_color_range=int(frame.color_range or 0) or None)
    scale = np.float32(1.0 / (65535.0 if bits > 8 else 255.0))
    return arr.astype(np.float32) * scale


def to_rgb24(rgb: np.ndarray) -> np.ndarray:
    """RGB float [0, 1] -> uint8 as an 8-bit output video gets it (eval measures these very values)."""
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def is_rgb_family(pix_fmt: str) -> bool:
    try:
        return bool(av.VideoFormat(pix_fmt).is_rgb)
    except (ValueError, av.FFmpegError):
        return False


def format_geometry(pix_fmt: str) -> tuple[int, int, int]:
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


def pad_to(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def round_to(size: float, multiple: int) -> int:
    return max(multiple, round(size / multiple) * multiple)


@dataclass(frozen=True)
class Geometry:
    """Output picture size: the model's output (`model_w` x `model_h`), then resized and/or padded to the codec's."""

    model_w: int
    model_h: int
    width: int  # as encoded
    height: int
    pad_w: int = 0  # columns/rows repeated on the right/bottom (model scale only)
    pad_h: int = 0

    @property
    def resized(self) -> bool:
        return (self.width - self.pad_w, self.height - self.pad_h) != (self.model_w, self.model_h)


def output_geometry(fmt: VideoFormat, scale: int, outscale: float | None, pix_fmt: str) -> Geometry:
    """Encoded size for `scale` (the model's) or `outscale` (final size / input size), fitted to `pix_fmt`."""
    _, mw, mh = format_geometry(pix_fmt)
    sw, sh = scale * fmt.width, scale * fmt.height
    if outscale is None:
        ow, oh = pad_to(sw, mw), pad_to(sh, mh)
        return Geometry(sw, sh, ow, oh, ow - sw, oh - sh)
    tw, th = round_to(fmt.width * outscale, mw), round_to(fmt.height * outscale, mh)
    return Geometry(sw, sh, tw, th)


def choose_pix_fmt(pix_fmt: str, bits: int) -> str:
    if pix_fmt == "auto":
        return "yuv420p10le" if bits > 8 else "yuv420p"
    return pix_fmt


def encoder_codec(name: str) -> av.Codec:
    try:
        return av.Codec(name, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise OutputError(f"video encoder {name!r} is not available in this FFmpeg build") from exc


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides the encoded bitstream; two encoders opened from one spec write compatible streams."""

    codec: str
    pix_fmt: str
    geometry: Geometry
    time_base: Fraction
    rate: Fraction
    fmt: VideoFormat
    crf: int | None
    preset: str | None
    codec_options: tuple[tuple[str, str], ...]

    @property
    def bits(self) -> int:
        return format_geometry(self.pix_fmt)[0]

    def check(self) -> None:
        codec = encoder_codec(self.codec)
        supported = {f.name for f in (codec.video_formats or [])}
        if supported and self.pix_fmt not in supported:
            raise OutputError(
                f"encoder {codec.name} cannot write pixel format {self.pix_fmt} "
                f"(supported: {', '.join(sorted(supported))})"
            )

    def configure(self, cc: Any, global_header: bool) -> None:
        """Set up and open encoder context `cc` (a stream's or a standalone one)."""
        g, f = self.geometry, self.fmt
        cc.width, cc.height, cc.pix_fmt = g.width, g.height, self.pix_fmt
        cc.time_base = self.time_base
        cc.framerate = self.rate
        if not is_rgb_family(self.pix_fmt):
            cc.color_range = f.color_range
            cc.colorspace = f.colorspace
        cc.color_primaries = f.color_primaries
        cc.color_trc = f.color_trc
        if f.sample_aspect_ratio:
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                cc.sample_aspect_ratio = f.sample_aspect_ratio
        if global_header:
            cc.flags |= av.codec.context.Flags.global_header.value
        private = {o.name for o in cc.supported_options.private}
        copts: dict[str, str] = {}
        if self.crf is not None and "crf" in private:
            copts["crf"] = str(self.crf)
        if self.preset is not None and "preset" in private:
            copts["preset"] = str(self.preset)
        copts.update(dict(self.codec_options))
        cc.options = copts
        try:
            cc.open()
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"cannot open the {self.codec} encoder ({self.pix_fmt} {g.width}x{g.height}, {copts}): {exc}"
            ) from exc

    def open_standalone(self, global_header: bool) -> av.VideoCodecContext:
        cc = av.CodecContext.create(encoder_codec(self.codec), "w")
        self.configure(cc, global_header)
        return cc  # type: ignore[return-value]

    def make_frame(self, rgb: np.ndarray, pts: int, duration: int) -> av.VideoFrame:
        """Upscaled RGB float [0, 1] -> an encoder frame with the output geometry, colour tags and timestamps."""
        g, f = self.geometry, self.fmt
        if g.resized:
            rgb = resize(rgb, g.width, g.height)
        elif g.pad_w or g.pad_h:
            rgb = np.pad(rgb, ((0, g.pad_h), (0, g.pad_w), (0, 0)), mode="edge")
        if self.bits > 8:
            arr = np.clip(rgb * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb48le")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(to_rgb24(rgb)), format="rgb24")
        if is_rgb_family(self.pix_fmt):
            out = frame.reformat(format=self.pix_fmt)
        else:
            out = frame.reformat(
                format=self.pix_fmt,
                dst_colorspace=f.colorspace if f.colorspace != UNSPECIFIED else None,
                dst_color_range=f.color_range or None,
            )
            out.colorspace = f.colorspace
            out.color_range = f.color_range
        out.color_primaries = f.color_primaries
        out.color_trc = f.color_trc
        out.pts = pts
        out.time_base = self.time_base
        if duration:
            with contextlib.suppress(AttributeError, TypeError):
                out.duration = duration
        return out
