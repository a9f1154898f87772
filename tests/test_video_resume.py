"""Resumable video: an interrupted run continues from its last finished segment and equals an uninterrupted one."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tadsr_cli.base.errors import OutputError
from tadsr_cli.pipeline.video import VideoOptions, upscale_video
from tadsr_cli.pipeline.video_segments import read_info, work_dir_for
from tests.test_video import Boom, Cubic, frames, make_clip, packets  # Boom: raises at frame `at` (1-based)

LOSSLESS = {"crf": 0, "codec_options": {"qp": "0"}}


def pixels(path: Path) -> list[np.ndarray]:
    return [f.to_ndarray(format="rgb24") for f in frames(path)]


def times(path: Path) -> list[tuple[int, Fraction]]:
    return [(f.pts, f.time_base) for f in frames(path)]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("GPU fell off the bus")])
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_interrupted_video_resumes_and_equals_an_uninterrupted_run(tmp_path: Path, ext: str,
                                                                   exc: BaseException) -> None:
    src = make_clip(tmp_path / f"in{ext}", n=30)
    opts = dict(segment_frames=8, resume=True, **LOSSLESS)
    whole = tmp_path / f"whole{ext}"
    upscale_video(src, whole, Cubic(), VideoOptions(**opts))
    assert not work_dir_for(whole).exists()  # success leaves no work folder

    dst = tmp_path / f"out{ext}"
    with pytest.raises(type(exc)):
        upscale_video(src, dst, Boom(exc, at=21), VideoOptions(**opts))
    assert not dst.exists()
    work = work_dir_for(dst)
    done = sorted(p.name for p in work.glob("seg-*.pkts"))
    assert done == ["seg-000000.pkts", "seg-000001.pkts"]  # frames 1-16; the third segment was not finished
    assert [read_info(work / n, i).frames for i, n in enumerate(done)] == [8, 8]

    again = Cubic()
    seen: list[tuple[int, int | None]] = []
    rep = upscale_video(src, dst, again, VideoOptions(**opts), progress=lambda d, t: seen.append((d, t)))
    assert rep.resumed_frames == 16 and again.calls == 30 - 16 and seen[0] == (16, 30) and seen[-1] == (30, 30)
    assert rep.frames_in == rep.frames_out == 30 and not rep.warnings
    assert not work.exists()
    assert times(dst) == times(whole) and len(times(dst)) == 30
    for a, b in zip(pixels(dst), pixels(whole), strict=True):
        assert np.array_equal(a, b)
    assert packets(dst, "audio") == packets(src, "audio") == packets(whole, "audio")
    assert packets(dst, "subtitle") == packets(whole, "subtitle")


def test_restart_and_changed_settings_start_over(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=20, subtitles=False)
    dst = tmp_path / "out.mkv"
    opts = dict(segment_frames=4, resume=True)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, dst, Boom(KeyboardInterrupt(), at=10), VideoOptions(**opts))
    assert len(list(work_dir_for(dst).glob("seg-*"))) == 2

    changed = Cubic()
    rep = upscale_video(src, dst, changed, VideoOptions(crf=30, **opts))  # another CRF: old segments are useless
    assert rep.resumed_frames == 0 and changed.calls == 20
    assert any("started over" in w for w in rep.warnings)

    dst.unlink()
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, dst, Boom(KeyboardInterrupt(), at=10), VideoOptions(**opts))
    fresh = Cubic()
    rep = upscale_video(src, dst, fresh, VideoOptions(restart=True, **opts))
    assert rep.resumed_frames == 0 and fresh.calls == 20 and len(frames(dst)) == 20


def test_resume_after_all_segments_finished_only_joins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_clip(tmp_path / "in.mp4", n=10)
    dst = tmp_path / "out.mp4"
    from tadsr_cli.pipeline import video as video_mod

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OutputError("disk full while joining")

    monkeypatch.setattr(video_mod, "write_output", disk_full)
    with pytest.raises(OutputError, match="disk full"):
        upscale_video(src, dst, Cubic(), VideoOptions(segment_frames=4, resume=True))
    monkeypatch.undo()
    idle = Cubic()
    rep = upscale_video(src, dst, idle, VideoOptions(segment_frames=4, resume=True))
    assert idle.calls == 0 and rep.resumed_frames == 10 and rep.frames_out == 10 and len(frames(dst)) == 10


def test_without_resume_a_failure_leaves_nothing(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=12)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(src, tmp_path / "out.mkv", Boom(KeyboardInterrupt(), at=9), VideoOptions(segment_frames=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_vfr_timestamps_exact_across_segment_boundaries(tmp_path: Path, ext: str) -> None:
    pts = [0, 40, 80, 200, 210, 260, 500, 540, 541, 700, 900, 1000, 1001, 1400]  # ms, irregular
    src = make_clip(tmp_path / f"vfr{ext}", n=len(pts), pts=pts, time_base=Fraction(1, 1000), subtitles=False)
    for per in (1, 3, 5):
        dst = tmp_path / f"out{per}{ext}"
        rep = upscale_video(src, dst, Cubic(), VideoOptions(segment_frames=per))
        got = [float(f.pts * f.time_base) for f in frames(dst)]
        want = [float(f.pts * f.time_base) for f in frames(src)]
        assert rep.frames_out == len(pts) and np.allclose(got, want, atol=1e-3), (per, got, want)
        assert packets(src, "audio") == packets(dst, "audio")
