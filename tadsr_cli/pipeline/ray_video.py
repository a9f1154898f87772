"""The driver's side of one video on a Ray cluster: plan frame ranges at segment boundaries, keep what finished,
join the segments with the input's other streams.

Everything that decides the encoded bits is set up exactly as `video.upscale_video` sets it up (same encoder spec,
manifest, work folder beside the output, join and remux), so the work folder is shared with the local path: a run
interrupted on the cluster resumes locally and the other way round. Segments come back from the workers in any
order; each is written into the work folder (atomically) as it arrives, so a driver that dies leaves every
finished segment for the next run (`WorkFolder.open(..., gaps=True)` keeps them, not only the first ones).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import InputError, OutputError
from tadsr_cli.pipeline.ray_video_chunk import ChunkResult, ChunkTask

# The local video path's own set-up and join steps: shared so that both paths write the same bits.
from tadsr_cli.pipeline.video import VideoOptions, check_output, encoder_spec, work_manifest, write_output
from tadsr_cli.pipeline.video_demux import Decoder
from tadsr_cli.pipeline.video_format import EncoderSpec, frame_format
from tadsr_cli.pipeline.video_mux import OutputTarget, container_name
from tadsr_cli.pipeline.video_probe import open_video, prescan
from tadsr_cli.pipeline.video_segments import SegmentInfo, WorkFolder, read_info

log = logging.getLogger(__name__)

MAX_CHUNK_SEGMENTS = 8  # a task redone after a fault, or lost with a dead driver, is at most this many segments


def demux_pts(path: Path, index: int) -> list[int] | None:
    """Presentation timestamps of the video packets in display order (demux only); None when some lack one."""
    found: list[int] = []
    with av.open(str(path), metadata_errors="ignore") as c:
        for pkt in c.demux(c.streams[index]):
            if pkt.size == 0:
                continue
            if pkt.pts is None:
                return None
            found.append(int(pkt.pts))
    found.sort()
    return found if len(set(found)) == len(found) else None


def chunk_segments(segments: int, workers: int) -> int:
    """Segments per task: about four tasks per worker (the last ones balance the load), at most
    `MAX_CHUNK_SEGMENTS` (warm-up frames cost less the longer a task is; a lost task costs more)."""
    return max(1, min(MAX_CHUNK_SEGMENTS, math.ceil(segments / max(1, 4 * workers))))


def plan_ranges(total: int, per: int, have: set[int], workers: int, to_end: bool = True) -> list[tuple[int, int | None]]:
    """(first, stop) frame ranges covering the segments of `total` frames (`per` each) not in `have`: runs of
    consecutive missing segments, cut into tasks of `chunk_segments`. The range that reaches the last frame has
    stop None with `to_end` (it also takes frames the demuxer did not count)."""
    count = (total + per - 1) // per
    size = chunk_segments(count, workers)
    runs: list[list[int]] = []
    for k in range(count):
        if k in have:
            continue
        if runs and runs[-1][-1] == k - 1 and len(runs[-1]) < size:
            runs[-1].append(k)
        else:
            runs.append([k])
    ranges: list[tuple[int, int | None]] = []
    for run in runs:
        first, stop = run[0] * per, min(total, (run[-1] + 1) * per)
        ranges.append((first, None if to_end and stop == total else stop))
    return ranges


@dataclass
class ClusterVideo:
    """One video job: `prepare`, then `tasks`; `add` each result as it comes; `finish` joins."""

    src: Path
    dst: Path
    options: VideoOptions
    scale: int
    warmup: int
    pts: list[int] | None = None  # of the frames to upscale; None: unknown (one task does the whole video)
    frames_total: int | None = None
    resumed_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    _spec: EncoderSpec | None = None
    _target: OutputTarget | None = None
    _global_header: bool = False
    _work: WorkFolder | None = None
    _stream: int = 0
    _t0: float = field(default_factory=time.perf_counter)

    # ---- planning ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Checks and set-up before any work (as the local path does them); the finished segments of an
        interrupted run are found here."""
        opts = self.options
        opts.validate()
        if self.dst.resolve() == self.src.resolve():
            raise OutputError(f"{self.dst}: output would overwrite the input")
        inp, vstream = open_video(self.src)
        try:
            self._stream = vstream.index
            decoder = Decoder(self.src, opts.allow_partial)
            scan = prescan(self.src, vstream.index, vstream)
            if scan.packets == 0:
                raise InputError(f"{self.src}: no video frames (the video stream is empty)")
            if scan.problem:
                decoder.damaged(scan.problem)  # strict: InputError; --allow-partial: one task reads what decodes
            first = next(decoder.frames(inp, vstream, opts.max_frames), None)
            if first is None:
                raise InputError(f"{self.src}: no decodable video frames")
            fmt = frame_format(first, vstream)
            self._target = OutputTarget(self.dst, opts.container_format, dict(opts.container_options),
                                        opts.faststart)
            self._spec = encoder_spec(opts, self._target, inp, vstream, fmt, self.scale)
            self._spec.check()
            _, self._global_header = check_output(self._target, inp, vstream, self._spec)
            manifest = work_manifest(self.src, self._spec, opts, container_name(self._target, inp))
        finally:
            inp.close()
        pts = None if scan.problem else demux_pts(self.src, self._stream)
        if pts is not None and opts.max_frames is not None:
            pts = pts[: opts.max_frames]
        self.pts = pts
        self.frames_total = len(pts) if pts is not None else scan.packets
        try:
            self._work = WorkFolder.open(self.dst, manifest, reuse=opts.resume and not opts.restart, gaps=True)
        except OSError as exc:
            raise OutputError(f"{self.dst}: cannot write ({exc.strerror or exc})") from exc
        if self._work.restarted_because:
            self.warnings.append(f"started over: {self._work.restarted_because}")
        self._keep_usable_segments()
        self.resumed_frames = self.frames_done

    def _keep_usable_segments(self) -> None:
        """Drop found segments that do not fit this plan (another split, or frames not known here)."""
        work = self._work
        assert work is not None
        if work.complete:
            return
        per = self.options.segment_frames
        if self.pts is None:
            work.clear()  # frames are counted by one task from the start: nothing to combine with
            work.path.mkdir(parents=True, exist_ok=True)
            self._write_manifest()
            return
        total = len(self.pts)
        last = (total - 1) // per
        keep = [s for s in work.done
                if (s.index < last and s.frames == per) or (s.index == last and s.frames >= total - per * last)]
        for stale in (s for s in work.done if s not in keep):
            stale.path.unlink(missing_ok=True)
        work.done = keep

    def _write_manifest(self) -> None:
        work = self._work
        assert work is not None
        with atomic_write_path(work.path / "manifest.json") as tmp:
            tmp.write_text(json.dumps(work.manifest, indent=1, sort_keys=True), encoding="utf-8")

    @property
    def complete(self) -> bool:
        """Every frame is in a segment already (an earlier run got that far): only the join is left."""
        return self._work is not None and self._work.complete

    @property
    def frames_done(self) -> int:
        return self._work.frames_done if self._work is not None else 0

    def tasks(self, workers: int) -> list[ChunkTask]:
        """Frame ranges for the segments still missing, in order."""
        assert self._work is not None
        if self.pts is None:
            return [self._task(0, None)]
        have = {s.index for s in self._work.done}
        ranges = plan_ranges(len(self.pts), self.options.segment_frames, have, workers,
                             to_end=self.options.max_frames is None)
        return [self._task(first, stop) for first, stop in ranges]

    def _task(self, first: int, stop: int | None) -> ChunkTask:
        assert self._spec is not None
        warmup = min(self.warmup, first)
        pts = () if self.pts is None else tuple(self.pts[first - warmup: stop])
        return ChunkTask(name=self.src.name, first=first, stop=stop, warmup=warmup, pts=pts,
                         segment_frames=self.options.segment_frames, spec=self._spec,
                         global_header=self._global_header, allow_partial=self.options.allow_partial)

    # ---- results -------------------------------------------------------------------------------------------------
    def add(self, result: ChunkResult) -> None:
        """Keep a task's segments (each written atomically into the work folder as it arrives)."""
        work = self._work
        assert work is not None
        for index, data in result.segments:
            path = work.segment_path(index)
            try:
                with atomic_write_path(path) as tmp:
                    tmp.write_bytes(data)
            except OSError as exc:
                raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
            info = read_info(path, index)
            work.done = [s for s in work.done if s.index != index] + [info]

    def finish(self) -> dict[str, Any]:
        """Join the segments and the input's other streams into the output (atomic); the work folder goes."""
        work, spec, target = self._work, self._spec, self._target
        assert work is not None and spec is not None and target is not None
        segments = sorted(work.done, key=lambda s: s.index)
        holes = [k for k, s in enumerate(segments) if s.index != k]
        if holes:
            raise OutputError(f"{self.dst}: video segment {holes[0]} is missing; run again to redo it")
        work.done = segments
        if not work.complete:
            work.mark_complete()  # a driver that dies while joining leaves only the join to do
        frames_out, plan = self._join(segments, spec, target)
        work.clear()
        frames = sum(s.frames for s in segments)
        warnings = self.warnings + plan.warnings
        if frames_out != frames:
            warnings.append(f"encoder wrote {frames_out} frames for {frames} input frames")
        if self.frames_total is not None and self.pts is not None and frames != self.frames_total:
            warnings.append(f"decoded {frames} frames, the container holds {self.frames_total}")
        for w in warnings:
            log.warning("%s: %s", self.src, w)
        elapsed = time.perf_counter() - self._t0
        g = spec.geometry
        return {"frames": frames_out, "fps": (frames - self.resumed_frames) / elapsed if elapsed > 0 else 0.0,
                "out_size": [g.width, g.height], "resumed_frames": self.resumed_frames}

    def _join(self, segments: list[SegmentInfo], spec: EncoderSpec, target: OutputTarget) -> tuple[int, Any]:
        inp, vstream = open_video(self.src)
        try:
            return write_output(target, self.src, vstream, spec, segments)
        except OSError as exc:
            raise OutputError(f"{self.dst}: cannot write ({exc.strerror or exc})") from exc
        finally:
            inp.close()

    def abandon(self) -> None:
        """After a failure: keep finished segments for a resume (as the local path does), else remove the folder."""
        if self._work is not None and not (self.options.resume and self._work.done):
            self._work.clear()
