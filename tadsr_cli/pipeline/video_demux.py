"""Decoding stage of the video pipeline: demux + decode the main video stream into timestamped RGB frames.

* Timestamps: every frame keeps its input pts (a missing pts continues from the previous one; a non-increasing
  one is nudged by one tick, since encoders refuse it), so variable-frame-rate input stays VFR.
* Truncated/damaged input: strict by default (`InputError`); with `allow_partial`, the decodable part is kept and a
  warning recorded.
* A mid-stream resolution change is resized to the first frame's size (one output size), with a warning.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.error
import av.video.stream
import numpy as np

from tadsr_cli.base.errors import InputError
from tadsr_cli.pipeline.video_format import VideoFormat, frame_format, to_rgb
from tadsr_cli.pipeline.video_probe import frame_rate, open_video
from tadsr_cli.pipeline.video_stages import END, Channel, Stopped


@dataclass
class Frame:
    """One decoded frame on its way through the pipeline (`index`: its position in the video, from 0)."""

    index: int
    rgb: np.ndarray
    pts: int
    duration: int


@dataclass
class Decoder:
    """Decoding state of one run: counts, damage found, warnings."""

    src: Path
    allow_partial: bool
    frames_in: int = 0
    truncated: bool = False
    resized: int = 0
    warnings: list[str] = field(default_factory=list)

    def damaged(self, detail: str) -> None:
        self.truncated = True
        if not self.allow_partial:
            raise InputError(f"{self.src}: damaged or truncated video: {detail}")
        self.warnings.append(f"damaged input, kept the decodable part: {detail}")

    def frames(
        self, inp: av.container.InputContainer, vstream: av.video.stream.VideoStream, max_frames: int | None
    ) -> Iterator[av.VideoFrame]:
        """Decoded video frames in order, pts fixed up, at most `max_frames`."""
        tb = vstream.time_base or Fraction(1, 1)
        default_dur = max(1, round(1 / (frame_rate(vstream) * tb)))
        last_pts: int | None = None
        demux = inp.demux(vstream)
        while True:
            packet: av.Packet | None
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self.damaged(f"read error after {self.frames_in} frames ({exc})")
                packet = None  # drain the decoder, then stop
            for frame in self._safe_decode(vstream, packet):
                pts = frame.pts
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + default_dur
                elif last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1  # encoders refuse non-increasing pts; keep the frame, nudge by one tick
                last_pts = pts
                frame.pts = pts
                yield frame
                self.frames_in += 1
                if max_frames is not None and self.frames_in >= max_frames:
                    return
            if packet is None:
                return

    def _safe_decode(self, vstream: av.video.stream.VideoStream, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            return vstream.decode(packet)
        except av.error.EOFError:  # decoder already drained (flush packet seen twice)
            return []
        except av.FFmpegError as exc:
            self.damaged(f"decode error at frame {self.frames_in + 1} ({exc})")
            return []

    def feed(self, frames: Iterator[av.VideoFrame], chan: Channel, fmt: VideoFormat, skip: int,
             stop: threading.Event) -> None:
        """Put every frame but the first `skip` (already done) into `chan` as a `Frame`, then END."""
        for index, obj in enumerate(frames):
            if stop.is_set():
                raise Stopped
            if index < skip:
                continue  # in a finished segment of the run being resumed: decoded only to get past it
            obj = self.conform(obj, fmt)
            chan.put(Frame(index, to_rgb(obj, fmt.bits), int(obj.pts), int(obj.duration or 0)), is_frame=True)
        chan.put(END, is_frame=False)

    def conform(self, obj: av.VideoFrame, fmt: VideoFormat) -> av.VideoFrame:
        """`obj` at the first frame's size: a mid-stream resolution change is resized (one output size)."""
        if (obj.width, obj.height) == (fmt.width, fmt.height):
            return obj
        if not self.resized:
            self.warnings.append(
                f"resolution changes mid-stream ({fmt.width}x{fmt.height} -> {obj.width}x{obj.height});"
                f" such frames are resized to {fmt.width}x{fmt.height}"
            )
        self.resized += 1
        pts, dur = obj.pts, obj.duration
        obj = obj.reformat(width=fmt.width, height=fmt.height, interpolation="BICUBIC")
        obj.pts, obj.duration = pts, dur
        return obj


def read_frames(src: Path, max_frames: int | None = None, allow_partial: bool = False) -> Iterator[np.ndarray]:
    """The RGB float32 frames `upscale_video` hands its upscaler (same decoder, colour conversion, size handling),
    for readers beside the pipeline (eval's ground truth and baselines)."""
    inp, vstream = open_video(src)
    try:
        vstream.thread_type = "AUTO"
        decoder = Decoder(src, allow_partial)
        fmt: VideoFormat | None = None
        try:
            for obj in decoder.frames(inp, vstream, max_frames):
                fmt = fmt or frame_format(obj, vstream)
                yield to_rgb(decoder.conform(obj, fmt), fmt.bits)
        except av.FFmpegError as exc:
            raise InputError(f"{src}: cannot decode video ({exc})") from exc
        if fmt is None:
            raise InputError(f"{src}: no decodable video frames")
    finally:
        inp.close()
