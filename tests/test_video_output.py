"""Video output options: `outscale` (resize after the model, codec-friendly sizes) and the container by extension."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tadsr_cli.base.errors import OutputError
from tadsr_cli.pipeline.video import VideoOptions, upscale_video
from tests.test_video import Cubic, frames, make_clip, packets


@pytest.mark.parametrize("outscale, size", [(2.0, (128, 96)), (1.5, (96, 72)), (4.0, (256, 192)), (6.0, (384, 288))])
def test_outscale_resizes_after_the_model(tmp_path: Path, outscale: float, size: tuple[int, int]) -> None:
    src = make_clip(tmp_path / "in.mkv", n=6)
    dst = tmp_path / "out.mkv"
    up = Cubic()
    rep = upscale_video(src, dst, up, VideoOptions(outscale=outscale, crf=0, codec_options={"qp": "0"}))
    assert up.calls == 6 and rep.out_size == size and rep.padded == (0, 0)
    out = frames(dst)
    assert len(out) == 6 and (out[0].width, out[0].height) == size
    # the picture is the x4 output resized (not a crop or a pad)
    ref = Cubic().upscale(frames(src)[0].to_ndarray(format="rgb24").astype(np.float32) / 255)
    ref = cv2.resize(ref, size, interpolation=cv2.INTER_AREA if size[0] < 256 else cv2.INTER_CUBIC)
    got = out[0].to_ndarray(format="rgb24").astype(np.float32) / 255
    assert np.abs(ref - got).mean() < 0.02
    assert packets(dst, "audio") == packets(src, "audio")


def test_outscale_keeps_even_sizes_for_420(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size=(63, 47), pix_fmt="yuv444p", n=4, audio=False, subtitles=False)
    rep = upscale_video(src, tmp_path / "o.mkv", Cubic(), VideoOptions(outscale=1.0))
    assert rep.out_size == (64, 48) and rep.out_size[0] % 2 == 0 and rep.out_size[1] % 2 == 0
    rep444 = upscale_video(src, tmp_path / "o444.mkv", Cubic(), VideoOptions(outscale=1.0, pix_fmt="yuv444p"))
    assert rep444.out_size == (63, 47)  # no subsampling: the exact size


@pytest.mark.parametrize("ext, fmt_name, vcodec", [(".mkv", "matroska", "h264"), (".mov", "mov", "h264"),
                                                   (".mp4", "mp4", "h264"), (".webm", "webm", "vp9")])
def test_container_follows_the_extension(tmp_path: Path, ext: str, fmt_name: str, vcodec: str) -> None:
    src = make_clip(tmp_path / "in.mp4", n=6)  # h264 + aac + mov_text
    dst = tmp_path / f"out{ext}"
    rep = upscale_video(src, dst, Cubic(), VideoOptions())
    with av.open(str(dst)) as c:
        assert fmt_name in c.format.name.split(",")
        assert c.streams.video[0].codec_context.name == vcodec
        kinds = [s.type for s in c.streams]
    assert len(frames(dst)) == 6 and rep.frames_out == 6
    if ext == ".webm":  # WebM holds neither AAC nor mov_text: both dropped with a message, the video comes out
        assert kinds == ["video"] and rep.dropped_streams == ["1:audio:aac", "2:subtitle:mov_text"]
        assert any("1:audio:aac not copied" in w for w in rep.warnings)
        assert all("\n" not in w for w in rep.warnings)
    else:
        # same bytes (Matroska shifts all streams together to avoid negative timestamps)
        assert "audio" in kinds and [b for _, b in packets(dst, "audio")] == [b for _, b in packets(src, "audio")]
    if ext in (".mp4", ".mov"):
        assert kinds == ["video", "audio", "subtitle"]


def test_codec_the_container_cannot_hold_fails_before_upscaling(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=6)
    up = Cubic()
    with pytest.raises(OutputError, match="cannot hold"):
        upscale_video(src, tmp_path / "out.webm", up, VideoOptions(codec="libx264"))
    assert up.calls == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
