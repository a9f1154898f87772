"""A worker's share of one long video: a range of frames, upscaled and encoded into closed-GOP segments.

The range starts at a segment boundary of the local resumable path (`video_segments`, `segment_frames` frames per
segment), so the driver joins the segments of all workers exactly as it joins its own. The worker seeks to the key
frame before the range and runs `warmup` frames before it through the upscaler without encoding them: temporal
smoothing is recursive, so a range that started cold would differ from a local run for its first frames; after
the warm-up it carries the same state to within `strength ** warmup`.

Frames are found by timestamp: the driver sends the presentation timestamps it demuxed for the range, so a decoded
frame's index is its place in that list and a video whose frames do not match it is refused (one line) instead
of being split wrongly.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from tadsr_cli.base.errors import InputError, OutputError, TadsrError
from tadsr_cli.pipeline.video_demux import Decoder
from tadsr_cli.pipeline.video_format import EncoderSpec, to_rgb
from tadsr_cli.pipeline.video_probe import open_video
from tadsr_cli.pipeline.video_segments import SegmentWriter, extradata_hash

SETTLED = 0.01  # warm-up lasts until the smoothing's memory of its cold start is below this weight
MAX_WARMUP = 48


def warmup_frames(strength: float) -> int:
    """Frames before a range that bring the recursive smoothing (`out = s * past + (1 - s) * new`) to within
    `SETTLED` of a run that started at frame 0: 13 for the default 0.7, none without smoothing."""
    if strength <= 0.0:
        return 0
    return min(MAX_WARMUP, math.ceil(math.log(SETTLED) / math.log(strength)))


@dataclass(frozen=True)
class ChunkTask:
    """Frames `first` .. `stop` - 1 of a video, after `warmup` frames that only prime the upscaler."""

    name: str  # the source's file name, for messages
    first: int
    stop: int | None  # None: to the end of the video
    warmup: int
    pts: tuple[int, ...]  # timestamps of frames first - warmup ..., as demuxed by the driver (() = unknown)
    segment_frames: int
    spec: EncoderSpec
    global_header: bool
    allow_partial: bool = False

    @property
    def start(self) -> int:
        return self.first - self.warmup


@dataclass
class ChunkResult:
    segments: list[tuple[int, bytes]] = field(default_factory=list)  # (segment index, segment file bytes)
    frames: int = 0  # frames encoded
    upscaled: int = 0  # frames through the upscaler, warm-up included
    seconds: float = 0.0
    worker: str = ""


def _decoded(path: Path, task: ChunkTask) -> Iterator[av.VideoFrame]:
    """Decoded frames from index `task.start` on: a seek to the key frame before it where the timestamps are
    known, else decoding from the first frame (also when the seek lands after the wanted frame)."""
    target = task.pts[0] if task.pts and task.start > 0 else None
    for attempt in ("seek", "scan") if target is not None else ("scan",):
        inp, vstream = open_video(path)
        try:
            vstream.thread_type = "AUTO"
            decoder = Decoder(path, task.allow_partial)
            if attempt == "seek":
                inp.seek(target, stream=vstream, backward=True)
                frames = decoder.frames(inp, vstream, None)
                head = next(frames, None)
                if head is None or head.pts > target:
                    continue  # no index to seek with: count from the start instead
                yield from _from_pts(_chain(head, frames), target)
                return
            for index, frame in enumerate(decoder.frames(inp, vstream, None)):
                if index >= task.start:
                    yield frame
            return
        finally:
            inp.close()


def _chain(head: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield head
    yield from rest


def _from_pts(frames: Iterator[av.VideoFrame], target: int) -> Iterator[av.VideoFrame]:
    for frame in frames:
        if frame.pts >= target:
            yield frame


class _Segments:
    """Encodes frames into segments of `segment_frames`, each by a fresh encoder (as the local path does)."""

    def __init__(self, task: ChunkTask, folder: Path) -> None:
        self.task, self.folder = task, folder
        self.cc: Any = None
        self.seg: SegmentWriter | None = None
        self.done: list[tuple[int, bytes]] = []

    def add(self, index: int, rgb: np.ndarray, pts: int, duration: int) -> None:
        per, spec = self.task.segment_frames, self.task.spec
        if self.seg is None:
            self.cc = spec.open_standalone(self.task.global_header)
            number = index // per
            self.seg = SegmentWriter(self.folder / f"seg-{number:06d}.pkts", number, extradata_hash(self.cc))
        for pkt in self.cc.encode(spec.make_frame(rgb, pts, duration)):
            self.seg.write(pkt)
        self.seg.add_frame(pts, duration)
        if (index + 1) % per == 0:
            self.close()

    def close(self) -> None:
        """Drain the encoder into the open segment and keep its bytes."""
        if self.seg is None:
            return
        seg, self.seg = self.seg, None
        try:
            for pkt in self.cc.encode(None):
                seg.write(pkt)
            info = seg.commit()
        except BaseException:
            seg.abort()
            raise
        self.done.append((info.index, info.path.read_bytes()))
        info.path.unlink()

    def abort(self) -> None:
        if self.seg is not None:
            self.seg.abort()
            self.seg = None


def run_chunk(task: ChunkTask, path: Path, upscaler: Any, folder: Path) -> ChunkResult:
    """Upscale and encode the task's frames of the local video `path`; segment files are made in `folder`."""
    t0 = time.perf_counter()
    fmt = task.spec.fmt
    expected_shape = (fmt.height * upscaler.scale, fmt.width * upscaler.scale, 3)
    result = ChunkResult(worker=f"{socket.gethostname()}:{os.getpid()}")
    segments = _Segments(task, folder)
    conform = Decoder(path, task.allow_partial)  # mid-stream size changes, as the local path resizes them
    wanted = None if task.stop is None else task.stop - task.start
    k = 0
    frames = _decoded(path, task)
    try:
        for frame in frames:
            if wanted is not None and k >= wanted:
                break
            if k < len(task.pts) and frame.pts != task.pts[k]:
                raise InputError(f"{task.name}: frame {task.start + k} has timestamp {frame.pts}, the container "
                                 f"says {task.pts[k]}: this video cannot be split across workers; run it without "
                                 "--ray")
            index = task.start + k
            k += 1
            frame = conform.conform(frame, fmt)
            up = upscaler.upscale(to_rgb(frame, fmt.bits))
            result.upscaled += 1
            if not isinstance(up, np.ndarray) or up.shape != expected_shape:
                raise TadsrError(f"upscaler returned {getattr(up, 'shape', type(up).__name__)}, expected an "
                                 f"array of shape {expected_shape}")
            if index < task.first:
                continue  # warm-up: primes the smoothing, encoded by the chunk before
            segments.add(index, up.astype(np.float32, copy=False), int(frame.pts), int(frame.duration or 0))
            result.frames += 1
        if wanted is not None and k < wanted:
            raise InputError(f"{task.name}: the video ended at frame {task.start + k}, before frame {task.stop} "
                             "that its container announced")
        segments.close()  # the video's last (partial) segment
    except av.FFmpegError as exc:
        raise OutputError(f"{task.name}: frames {task.first}-{k + task.start}: {exc}") from exc
    finally:
        frames.close()  # closes the input now, not whenever the generator is collected
        segments.abort()
        with contextlib.suppress(OSError):
            for stray in folder.glob("seg-*"):
                stray.unlink()
    result.segments = segments.done
    result.seconds = time.perf_counter() - t0
    return result
