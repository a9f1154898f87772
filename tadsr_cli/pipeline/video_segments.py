"""Resumable video encoding: closed-GOP segments written atomically into a work folder next to the output.

Each segment holds `segment_frames` consecutive frames encoded by a fresh encoder (so it starts with a key frame
and needs nothing from its neighbours). A segment file is the encoder's packets as they came out, followed by a
JSON trailer (frames, packet pts, extradata hash) and the trailer's length; it appears under its final name only
once complete (temp + rename), so after an interruption every segment file present is whole.

`manifest.json` records the source file and every setting that changes the encoded bits; a work folder made with
other settings (or for another source) is not reused. Layout:

    .NAME.tadsr-work/manifest.json
    .NAME.tadsr-work/seg-000000.pkts, seg-000001.pkts, ...
    .NAME.tadsr-work/complete.json        (the encoder saw the end of the input: only the join is left)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import av

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import OutputError

_RECORD = struct.Struct("<qqqBI")  # pts, dts, duration, keyframe, size (then `size` bytes of payload)
_TAIL = struct.Struct("<I8s")  # trailer length, magic
_MAGIC = b"TADSRSG1"
_NO_TS = -(2**63)  # a packet without a timestamp
_COMPLETE = "complete.json"  # written once every frame is in a segment


def work_dir_for(dst: Path) -> Path:
    """The hidden work folder beside `dst` (batch runs skip hidden folders, so it is never taken as input)."""
    return dst.parent / f".{dst.name}.tadsr-work"


def extradata_hash(cc: Any) -> str:
    return hashlib.sha256(bytes(cc.extradata or b"")).hexdigest()[:16]


@dataclass
class SegmentInfo:
    index: int
    path: Path
    frames: int
    pts: list[int]  # packet pts in decode order
    extradata: str  # hash of the encoder's global header
    first_pts: int | None
    last_end: int | None

    @property
    def reorder_depth(self) -> int:
        """How many packets a decoder must hold back: max over packets of (decode index - presentation rank)."""
        rank = {p: i for i, p in enumerate(sorted(self.pts))}
        return max((j - rank[p] for j, p in enumerate(self.pts)), default=0)


def read_info(path: Path, index: int) -> SegmentInfo:
    """The trailer of segment file `path`; `OutputError` if it is not a whole segment."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            if size < _TAIL.size:
                raise ValueError("too short")
            fh.seek(size - _TAIL.size)
            length, magic = _TAIL.unpack(fh.read(_TAIL.size))
            if magic != _MAGIC or length > size - _TAIL.size:
                raise ValueError("no trailer")
            fh.seek(size - _TAIL.size - length)
            meta = json.loads(fh.read(length))
        return SegmentInfo(index, path, int(meta["frames"]), [int(p) for p in meta["pts"]], str(meta["extradata"]),
                           meta["first_pts"], meta["last_end"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: not a complete video segment ({exc})") from exc


def read_packets(info: SegmentInfo) -> Iterator[tuple[int | None, int | None, int, bool, bytes]]:
    """(pts, dts, duration, keyframe, payload) of every packet of a segment, in decode order."""
    with open(info.path, "rb") as fh:
        for _ in range(len(info.pts)):
            pts, dts, duration, key, size = _RECORD.unpack(fh.read(_RECORD.size))
            yield (None if pts == _NO_TS else pts, None if dts == _NO_TS else dts, duration, bool(key),
                   fh.read(size))


class SegmentWriter:
    """Writes one segment: packets go to a temp file as the encoder makes them; `commit` adds the trailer."""

    def __init__(self, path: Path, index: int, extradata: str) -> None:
        self.path, self.index, self.extradata = path, index, extradata
        self._ctx = atomic_write_path(path)
        self._tmp = self._ctx.__enter__()
        self._fh: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self.pts: list[int] = []
        self.frames = 0
        self.first_pts: int | None = None
        self.last_end: int | None = None

    def add_frame(self, pts: int, duration: int) -> None:
        self.frames += 1
        end = pts + duration
        self.first_pts = pts if self.first_pts is None else min(self.first_pts, pts)
        self.last_end = end if self.last_end is None else max(self.last_end, end)

    def write(self, packet: av.Packet) -> None:
        data = bytes(packet)
        pts = packet.pts if packet.pts is not None else _NO_TS
        dts = packet.dts if packet.dts is not None else _NO_TS
        self._fh.write(_RECORD.pack(pts, dts, int(packet.duration or 0), 1 if packet.is_keyframe else 0,
                                    len(data)))
        self._fh.write(data)
        self.pts.append(packet.pts if packet.pts is not None else (self.pts[-1] + 1 if self.pts else 0))

    def commit(self) -> SegmentInfo:
        meta = {"frames": self.frames, "pts": self.pts, "extradata": self.extradata, "first_pts": self.first_pts,
                "last_end": self.last_end}
        raw = json.dumps(meta).encode()
        self._fh.write(raw)
        self._fh.write(_TAIL.pack(len(raw), _MAGIC))
        self._fh.close()
        self._ctx.__exit__(None, None, None)  # rename into place
        return SegmentInfo(self.index, self.path, self.frames, self.pts, self.extradata, self.first_pts,
                           self.last_end)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(BaseException):
            self._ctx.__exit__(OutputError, OutputError("aborted"), None)  # removes the temp file


@dataclass
class WorkFolder:
    """The segments of one output: which are done, where the next goes, and the manifest they belong to."""

    path: Path
    manifest: dict[str, Any]
    done: list[SegmentInfo] = field(default_factory=list)
    restarted_because: str | None = None  # why an existing work folder was discarded

    @classmethod
    def open(cls, dst: Path, manifest: dict[str, Any], reuse: bool, gaps: bool = False) -> WorkFolder:
        """Create the work folder for `dst`, or reuse the segments of an earlier run with the same manifest.

        `gaps`: keep every whole segment, also after a missing one (Ray runs finish segments out of order)."""
        path = work_dir_for(dst)
        manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples become lists)
        folder = cls(path, manifest)
        if path.exists():
            old = _read_manifest(path / "manifest.json")
            if reuse and old == manifest:
                folder.done = _complete_prefix(path, gaps)
            elif reuse and old is not None:
                folder.restarted_because = "the source or the settings changed since the interrupted run"
            if not folder.done:
                folder.clear()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not folder.done:
                with atomic_write_path(path / "manifest.json") as tmp:
                    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the work folder ({exc.strerror or exc})") from exc
        return folder

    @property
    def frames_done(self) -> int:
        return sum(s.frames for s in self.done)

    @property
    def complete(self) -> bool:
        """Every frame of the video is in the segments (the encoder saw the end of the input)."""
        marker = _read_manifest(self.path / _COMPLETE)
        return bool(self.done) and marker is not None and marker.get("frames") == self.frames_done

    def mark_complete(self) -> None:
        with atomic_write_path(self.path / _COMPLETE) as tmp:
            tmp.write_text(json.dumps({"frames": self.frames_done}), encoding="utf-8")

    def segment_path(self, index: int) -> Path:
        return self.path / f"seg-{index:06d}.pkts"

    def clear(self) -> None:
        self.done = []
        shutil.rmtree(self.path, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete_prefix(folder: Path, gaps: bool = False) -> list[SegmentInfo]:
    """Whole segments 0, 1, 2, ... up to the first missing or damaged one (with `gaps`: every whole segment);
    anything else is deleted."""
    done: list[SegmentInfo] = []
    index = 0
    while True:
        path = folder / f"seg-{index:06d}.pkts"
        if not path.is_file():
            break
        try:
            info = read_info(path, index)
        except OutputError:
            break
        done.append(info)
        index += 1
    if gaps:
        for path in sorted(folder.glob("seg-*.pkts")):
            number = path.name[4:-5]
            if number.isdigit() and int(number) > index:
                with contextlib.suppress(OutputError):
                    done.append(read_info(path, int(number)))
    keep = {s.path.name for s in done} | {"manifest.json", _COMPLETE}
    for stray in folder.iterdir():
        if stray.name not in keep:
            with contextlib.suppress(OSError):
                stray.unlink() if not stray.is_dir() else shutil.rmtree(stray)
    return done
