"""Streaming video upscaling: remux fidelity, timestamps, colour, geometry, bad input, cleanup.

Every clip is generated here with PyAV (tiny: 64x48, 12-24 frames); the upscaler is a cv2 bicubic stand-in.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tadsr_cli.base.errors import InputError, OutputError, TadsrError
from tadsr_cli.pipeline import video_demux, video_format
from tadsr_cli.pipeline.video import VideoOptions, VideoReport, is_video, upscale_video

RATE = 24


class Cubic:
    """Stand-in for the pipeline Upscaler: bicubic resize by `scale`."""

    def __init__(self, scale: int = 4) -> None:
        self.scale = scale
        self.calls = 0

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0
        self.calls += 1
        h, w = rgb.shape[:2]
        return np.clip(cv2.resize(rgb, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC), 0, 1)


def _pattern(i: int, w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(1, w - 1) + 7 * i) % 256
    g = (y * 255 // max(1, h - 1)) % 256
    b = np.full_like(x, (40 + 9 * i) % 256)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def make_clip(
    path: Path,
    *,
    size: tuple[int, int] = (64, 48),
    n: int = 12,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    audio: bool = True,
    subtitles: bool = True,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    rotation: float | None = None,
    flip: bool = False,
    color: dict[str, int] | None = None,
    metadata: dict[str, str] | None = None,
    solid: tuple[int, int, int] | None = None,
) -> Path:
    """Write a small clip: video (+ AAC audio, + subtitles: mov_text in MP4, subrip in MKV)."""
    w, h = size
    c = av.open(str(path), "w")
    v = c.add_stream(codec, rate=RATE)
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    tb = time_base or Fraction(1, RATE)
    v.codec_context.time_base = tb
    v.time_base = tb
    if codec == "libx264":
        v.codec_context.options = {"preset": "ultrafast", "crf": "10"}
    if rotation is not None:
        v.set_display_rotation(rotation, hflip=flip)
    color = color or {}
    for k, val in color.items():
        setattr(v.codec_context, k, val)
    a = None
    if audio:
        a = c.add_stream("aac", rate=48000, layout="mono")
        a.metadata["language"] = "eng"
    s = None
    if subtitles:
        s = c.add_mux_stream("mov_text" if path.suffix == ".mp4" else "subrip")
        s.time_base = Fraction(1, 1000)
    if metadata:
        c.metadata.update(metadata)
    for i in range(n):
        img = np.full((h, w, 3), solid, np.uint8) if solid is not None else _pattern(i, w, h)
        fmt = "rgb48le" if "10" in pix_fmt else "rgb24"
        arr = (img.astype(np.uint16) * 257) if fmt == "rgb48le" else img
        f = av.VideoFrame.from_ndarray(arr, format=fmt)
        f = f.reformat(
            format=pix_fmt,
            dst_colorspace=color.get("colorspace") or None,
            dst_color_range=color.get("color_range") or None,
        )
        f.pts = pts[i] if pts is not None else i
        f.time_base = tb
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    if a is not None:
        end_s = float((pts[-1] + 1) * tb) if pts is not None else n / RATE
        samples = int(48000 * end_s)
        t = np.arange(samples, dtype=np.float32) / 48000
        data = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        af.sample_rate, af.pts = 48000, 0
        for p in a.encode(af):
            c.mux(p)
        for p in a.encode():
            c.mux(p)
    if s is not None:
        for k, txt in enumerate([b"hello", b"world"]):
            payload = len(txt).to_bytes(2, "big") + txt if path.suffix == ".mp4" else txt
            p = av.Packet(payload)
            p.stream = s
            p.pts = p.dts = k * 200
            p.duration = 150
            p.time_base = s.time_base
            c.mux(p)
    c.close()
    return path


def packets(path: Path, kind: str) -> list[tuple[float | None, bytes]]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:
            return []
        return [
            (None if p.pts is None else round(float(p.pts * p.time_base), 6), bytes(p))
            for p in c.demux(streams[0])
            if p.size
        ]


def frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def frame_times(path: Path) -> list[float]:
    return [float(f.pts * f.time_base) for f in frames(path)]


def video_end(path: Path) -> float:
    """End of the video: last frame start + one frame."""
    fr = frames(path)
    last = fr[-1]
    dur = float(last.duration * last.time_base) if last.duration else 1 / RATE
    return float(last.pts * last.time_base) + dur


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def no_pipeline_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("tadsr-video")]


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_audio_and_subtitles_remuxed_4x(tmp_path: Path, ext: str) -> None:
    src = make_clip(tmp_path / f"in{ext}", n=12, metadata={"title": "my clip", "comment": "kept"})
    dst = tmp_path / f"out{ext}"
    seen: list[tuple[int, int | None]] = []
    rep = upscale_video(src, dst, Cubic(), VideoOptions(), progress=lambda d, t: seen.append((d, t)))
    assert isinstance(rep, VideoReport)
    assert rep.frames_in == rep.frames_out == 12 and rep.frames_expected == 12
    assert rep.in_size == (64, 48) and rep.out_size == (256, 192) and rep.padded == (0, 0)
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == list(range(0, 13))
    assert not rep.warnings and not rep.truncated
    out = frames(dst)
    assert len(out) == 12 and (out[0].width, out[0].height) == (256, 192)
    # audio: every packet byte-identical at the same time
    a_in, a_out = packets(src, "audio"), packets(dst, "audio")
    assert len(a_in) > 10 and a_in == a_out
    # subtitles: same text at the same times
    s_in, s_out = packets(src, "subtitle"), packets(dst, "subtitle")
    assert [x for x in s_in if len(x[1]) > 2] == [x for x in s_out if len(x[1]) > 2]
    assert any(b"hello" in x[1] for x in s_out)
    assert abs(video_end(dst) - video_end(src)) <= 1 / RATE
    assert abs(rep.duration_s - 12 / RATE) <= 1 / RATE
    with av.open(str(src)) as ci, av.open(str(dst)) as co:
        assert abs(ci.duration - co.duration) / 1e6 <= 1 / RATE
        meta = {k.lower(): v for k, v in co.metadata.items()}  # Matroska tags come back upper-case
        assert meta.get("title") == "my clip" and meta.get("comment") == "kept"
        assert co.streams.audio[0].language == "eng"
        assert [s.type for s in co.streams] == ["video", "audio", "subtitle"]


def test_frames_are_the_upscaled_frames(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=12, audio=False, subtitles=False)
    dst = tmp_path / "out.mkv"
    upscale_video(src, dst, Cubic(), VideoOptions(crf=0, codec_options={"qp": "0"}))
    fin, fout = frames(src), frames(dst)
    for a, b in zip(fin, fout, strict=True):
        ref = Cubic().upscale(a.to_ndarray(format="rgb24").astype(np.float32) / 255)
        got = b.to_ndarray(format="rgb24").astype(np.float32) / 255
        assert np.abs(ref - got).mean() < 0.02  # same picture, same order (only 4:2:0 chroma loss)


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_vfr_timestamps_kept(tmp_path: Path, ext: str) -> None:
    pts = [0, 40, 80, 200, 210, 260, 500, 540, 541, 700, 900, 1000]  # ms, irregular
    src = make_clip(tmp_path / f"vfr{ext}", n=len(pts), pts=pts, time_base=Fraction(1, 1000), subtitles=False)
    dst = tmp_path / f"out{ext}"
    rep = upscale_video(src, dst, Cubic(), VideoOptions())
    t_in, t_out = frame_times(src), frame_times(dst)
    assert len(t_out) == len(t_in) == len(pts) == rep.frames_out
    assert np.allclose(t_in, t_out, atol=1e-3), (t_in, t_out)
    assert packets(src, "audio") == packets(dst, "audio")


@pytest.mark.parametrize(
    "color",
    [
        {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1},  # BT.709 limited
        {"color_range": 2, "colorspace": 6, "color_primaries": 6, "color_trc": 6},  # SMPTE170M full
    ],
)
def test_colour_tags_copied_and_colours_kept(tmp_path: Path, color: dict[str, int]) -> None:
    rgb = (200, 60, 30)
    src = make_clip(tmp_path / "c.mp4", n=6, color=color, solid=rgb, audio=False, subtitles=False)
    with av.open(str(src)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc) == tuple(color.values())
    dst = tmp_path / "o.mp4"
    upscale_video(src, dst, Cubic(), VideoOptions())
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc) == tuple(color.values())
        f = next(c.decode(video=0))
        assert (f.color_range, f.colorspace) == (color["color_range"], color["colorspace"])
    # decoding the input and the output the same way gives the same colour (no matrix/range shift)
    a = frames(src)[0].to_ndarray(format="rgb24", src_color_range=color["color_range"]).reshape(-1, 3).mean(0)
    b = frames(dst)[0].to_ndarray(format="rgb24", src_color_range=color["color_range"]).reshape(-1, 3).mean(0)
    assert np.abs(a - b).max() < 2.5, (a, b)
    assert np.abs(b - np.array(rgb)).max() < 4, b


def test_rgb_input_gets_a_valid_yuv_matrix_tag(tmp_path: Path) -> None:
    src = make_clip(
        tmp_path / "rgb.mov",
        codec="png",
        pix_fmt="rgb24",
        n=3,
        solid=(200, 60, 30),
        audio=False,
        subtitles=False,
    )
    dst = tmp_path / "out.mkv"
    upscale_video(src, dst, Cubic(), VideoOptions())
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.colorspace == 2  # unspecified, never "RGB" on a YUV stream
    b = frames(dst)[0].to_ndarray(format="rgb24").reshape(-1, 3).mean(0)
    assert np.abs(b - np.array((200, 60, 30))).max() < 4, b


def test_odd_input_size(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size=(63, 47), pix_fmt="yuv444p", n=6, subtitles=False)
    dst = tmp_path / "out.mkv"
    rep = upscale_video(src, dst, Cubic(4), VideoOptions())
    assert rep.out_size == (252, 188) and rep.padded == (0, 0)
    f = frames(dst)
    assert len(f) == 6 and (f[0].width, f[0].height) == (252, 188) and f[0].format.name == "yuv420p"


def test_odd_output_size_is_padded_with_edge_pixels(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size=(21, 15), pix_fmt="yuv444p", n=6, audio=False, subtitles=False)
    dst = tmp_path / "out.mkv"
    rep = upscale_video(src, dst, Cubic(3), VideoOptions(pix_fmt="yuv420p", crf=0, codec_options={"qp": "0"}))
    assert rep.out_size == (64, 46) and rep.padded == (1, 1)
    f = frames(dst)[0]
    assert (f.width, f.height) == (64, 46)
    luma = np.asarray(f.planes[0]).reshape(f.height, -1)[:, : f.width].astype(int)
    assert np.abs(luma[:, -1] - luma[:, -2]).max() <= 2 and np.abs(luma[-1] - luma[-2]).max() <= 2
    # yuv444p output keeps the exact odd size
    rep444 = upscale_video(src, tmp_path / "o444.mkv", Cubic(3), VideoOptions(pix_fmt="yuv444p"))
    assert rep444.out_size == (63, 45) and rep444.padded == (0, 0)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_rotation_kept(tmp_path: Path, ext: str) -> None:
    src = make_clip(tmp_path / f"rot{ext}", n=6, rotation=90, subtitles=False)
    assert frames(src)[0].rotation == 90
    dst = tmp_path / f"out{ext}"
    upscale_video(src, dst, Cubic(), VideoOptions())
    f = frames(dst)[0]
    assert f.rotation == 90 and (f.width, f.height) == (256, 192)  # tagged, pixels not rotated


def test_rotation_with_flip_matrix_copied_exactly(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "flip.mp4", n=4, rotation=270, flip=True, audio=False, subtitles=False)
    dst = tmp_path / "out.mp4"
    upscale_video(src, dst, Cubic(), VideoOptions())
    key = av.sidedata.sidedata.Type.DISPLAYMATRIX
    assert bytes(frames(src)[0].side_data[key]) == bytes(frames(dst)[0].side_data[key])


def test_video_without_audio(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "silent.mp4", n=12, audio=False, subtitles=False)
    dst = tmp_path / "out.mp4"
    rep = upscale_video(src, dst, Cubic(), VideoOptions())
    assert rep.frames_out == 12 and rep.copied_streams == [] and not rep.warnings
    with av.open(str(dst)) as c:
        assert len(c.streams) == 1 and len(c.streams.video) == 1


def test_high_bit_depth_auto(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "ten.mkv", n=4, pix_fmt="yuv420p10le", audio=False, subtitles=False)
    dst = tmp_path / "out.mkv"
    upscale_video(src, dst, Cubic(), VideoOptions(pix_fmt="auto"))
    assert frames(dst)[0].format.name == "yuv420p10le"


def test_cross_container_drops_what_cannot_be_carried(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", n=6)
    rep = upscale_video(src, tmp_path / "out.mkv", Cubic(), VideoOptions())
    assert rep.copied_streams == ["1:audio:aac"] and rep.dropped_streams == ["2:subtitle:mov_text"]
    assert any("mov_text" in w for w in rep.warnings)
    # same bytes; Matroska shifts every stream by the same amount to avoid negative timestamps: sync kept
    a_in, a_out = packets(src, "audio"), packets(tmp_path / "out.mkv", "audio")
    assert [b for _, b in a_in] == [b for _, b in a_out]
    shift_a = a_out[0][0] - a_in[0][0]
    shift_v = frame_times(tmp_path / "out.mkv")[0] - frame_times(src)[0]
    assert abs(shift_a - shift_v) < 2e-3


def test_max_frames_preview(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=24)
    dst = tmp_path / "out.mkv"
    rep = upscale_video(src, dst, Cubic(), VideoOptions(max_frames=6))
    assert rep.frames_out == 6 and len(frames(dst)) == 6 and rep.frames_expected == 6
    a = packets(dst, "audio")
    assert a and max(t for t, _ in a if t is not None) < 6 / RATE
    assert a == packets(src, "audio")[: len(a)]


def test_memory_bounded_by_queue_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_clip(tmp_path / "in.mkv", n=24, audio=False, subtitles=False)
    converted = [0]
    real = video_demux.to_rgb

    def counting(frame: av.VideoFrame, bits: int) -> np.ndarray:
        converted[0] += 1
        return real(frame, bits)

    monkeypatch.setattr(video_demux, "to_rgb", counting)
    ahead: list[int] = []

    class Slow(Cubic):
        def upscale(self, rgb: np.ndarray) -> np.ndarray:
            out = super().upscale(rgb)
            threading.Event().wait(0.01)
            ahead.append(converted[0] - self.calls)
            return out

    upscale_video(src, tmp_path / "out.mkv", Slow(), VideoOptions(queue_size=2))
    # decoded-but-not-upscaled frames: the queue (2) + one being put + the prelude frame
    assert len(ahead) == 24 and max(ahead) <= 2 + 2


def _ts(path: Path, size: tuple[int, int], start: int, n: int = 6, data: bool = False) -> Path:
    w, h = size
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=RATE)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    v.codec_context.time_base = Fraction(1, RATE)
    d = c.add_data_stream("klv") if data else None
    for i in range(start, start + n):
        f = av.VideoFrame.from_ndarray(_pattern(i, w, h), format="rgb24")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
        if d is not None:
            p = av.Packet(b"\x06\x0e+4" + bytes([i]) * 8)
            p.stream, p.time_base = d, Fraction(1, 90000)
            p.pts = p.dts = i * 3750
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    c.close()
    return path


def test_data_stream_copied_or_dropped_with_warning(tmp_path: Path) -> None:
    src = _ts(tmp_path / "klv.ts", (64, 48), 0, n=8, data=True)
    rep = upscale_video(src, tmp_path / "out.ts", Cubic(), VideoOptions())
    assert rep.copied_streams == ["1:data:klv"] and not rep.warnings
    assert packets(src, "data") == packets(tmp_path / "out.ts", "data") and len(packets(src, "data")) == 8
    # MP4 refuses a KLV data stream when writing its header: retried without it, the video still comes out
    rep = upscale_video(src, tmp_path / "out.mp4", Cubic(), VideoOptions())
    assert rep.dropped_streams == ["1:data:klv"] and any("klv" in w for w in rep.warnings)
    assert rep.frames_out == 8 and len(frames(tmp_path / "out.mp4")) == 8


def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    a = _ts(tmp_path / "a.ts", (64, 48), 0).read_bytes()
    b = _ts(tmp_path / "b.ts", (80, 60), 6).read_bytes()
    src = tmp_path / "joined.ts"
    src.write_bytes(a + b)  # MPEG-TS files concatenate byte-wise
    rep = upscale_video(src, tmp_path / "out.mkv", Cubic(), VideoOptions())
    out = frames(tmp_path / "out.mkv")
    assert rep.frames_out == len(out) == 12 and {(f.width, f.height) for f in out} == {(256, 192)}
    assert any("resolution changes" in w for w in rep.warnings)


# ---- bad input and failures -------------------------------------------------------------------------------------
def test_is_video_by_content(tmp_path: Path) -> None:
    mp4 = make_clip(tmp_path / "a.mp4", n=3, audio=False, subtitles=False)
    mislabelled = tmp_path / "clip.jpg"
    mislabelled.write_bytes(mp4.read_bytes())
    img = _pattern(0, 16, 12)
    cv2.imwrite(str(tmp_path / "i.png"), img)
    cv2.imwrite(str(tmp_path / "i.jpg"), img)
    cv2.imwrite(str(tmp_path / "i.webp"), img)
    (tmp_path / "fake.mp4").write_bytes((tmp_path / "i.png").read_bytes())  # a PNG named .mp4
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello world\n" * 20)
    assert is_video(mp4) and is_video(mislabelled)
    for name, n in [("anim.gif", 3), ("still.gif", 1)]:
        c = av.open(str(tmp_path / name), "w")
        g = c.add_stream("gif", rate=10)
        g.width, g.height, g.pix_fmt = 16, 12, "rgb8"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_pattern(i * 20, 16, 12), format="rgb24")
            f.pts = i
            for p in g.encode(f):
                c.mux(p)
        for p in g.encode():
            c.mux(p)
        c.close()
    assert is_video(tmp_path / "anim.gif") and not is_video(tmp_path / "still.gif")
    for name in ["i.png", "i.jpg", "i.webp", "fake.mp4", "empty.mp4", "notes.txt", "missing.mp4"]:
        assert not is_video(tmp_path / name), name


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.mp4", b"", "empty file"),
        ("notes.mp4", b"this is not a video at all\n" * 50, "not a readable video"),
        ("missing.mp4", None, "no such file"),
    ],
)
def test_bad_files_give_one_line_input_error(
    tmp_path: Path, name: str, content: bytes | None, match: str
) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(InputError, match=match) as ei:
        upscale_video(src, tmp_path / "out.mp4", Cubic(), VideoOptions())
    assert "\n" not in str(ei.value)
    assert leftovers(tmp_path, {name}) == []


def test_still_image_and_audio_only_rejected(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "i.png"), _pattern(0, 16, 12))
    with pytest.raises(InputError, match="still image"):
        upscale_video(tmp_path / "i.png", tmp_path / "o.mp4", Cubic(), VideoOptions())
    c = av.open(str(tmp_path / "sound.mka"), "w")
    a = c.add_stream("aac", rate=48000, layout="mono")
    af = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
    af.sample_rate, af.pts = 48000, 0
    for p in [*a.encode(af), *a.encode()]:
        c.mux(p)
    c.close()
    with pytest.raises(InputError, match="no video stream"):
        upscale_video(tmp_path / "sound.mka", tmp_path / "o.mkv", Cubic(), VideoOptions())
    assert leftovers(tmp_path, {"i.png", "sound.mka"}) == []


def test_truncated_mkv_strict_then_partial(tmp_path: Path) -> None:
    full = make_clip(tmp_path / "full.mkv", n=24)
    data = full.read_bytes()
    src = tmp_path / "cut.mkv"
    src.write_bytes(data[: int(len(data) * 0.6)])
    dst = tmp_path / "out.mkv"
    with pytest.raises(InputError, match="truncated") as ei:
        upscale_video(src, dst, Cubic(), VideoOptions())
    assert "\n" not in str(ei.value)
    assert leftovers(tmp_path, {"full.mkv", "cut.mkv"}) == []
    rep = upscale_video(src, dst, Cubic(), VideoOptions(allow_partial=True))
    assert rep.truncated and rep.warnings and 0 < rep.frames_out < 24
    assert len(frames(dst)) == rep.frames_out


def test_truncated_mp4_without_index(tmp_path: Path) -> None:
    full = make_clip(tmp_path / "full.mp4", n=24)
    data = full.read_bytes()
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        upscale_video(src, tmp_path / "out.mp4", Cubic(), VideoOptions())
    assert leftovers(tmp_path, {"full.mp4", "cut.mp4"}) == []


def test_truncated_faststart_mp4_detected(tmp_path: Path) -> None:
    """Index at the front, media data cut: the prescan sees fewer samples than the index declares."""
    full = make_clip(tmp_path / "full.mp4", n=24, subtitles=False)
    fast = tmp_path / "fast.mp4"
    upscale_video(full, fast, Cubic(1), VideoOptions(crf=30))  # our output is +faststart
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(InputError, match="truncated"):
        upscale_video(src, tmp_path / "out.mp4", Cubic(), VideoOptions())
    rep = upscale_video(src, tmp_path / "out.mp4", Cubic(), VideoOptions(allow_partial=True))
    assert rep.truncated and rep.frames_out < 24


class Boom(Cubic):
    def __init__(self, exc: BaseException, at: int) -> None:
        super().__init__()
        self.exc, self.at = exc, at

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        if self.calls + 1 == self.at:
            raise self.exc
        return super().upscale(rgb)


@pytest.mark.parametrize("exc", [RuntimeError("model exploded"), KeyboardInterrupt()])
def test_failure_or_interrupt_leaves_no_file_and_no_thread(tmp_path: Path, exc: BaseException) -> None:
    src = make_clip(tmp_path / "in.mp4", n=24)
    dst = tmp_path / "out.mp4"
    with pytest.raises(type(exc)):
        upscale_video(src, dst, Boom(exc, at=5), VideoOptions(queue_size=2))
    assert leftovers(tmp_path, {"in.mp4"}) == []
    assert no_pipeline_threads()


def test_encoder_failure_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_clip(tmp_path / "in.mkv", n=12)

    def broken(self: object, rgb: object, pts: int, duration: int) -> av.VideoFrame:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_format.EncoderSpec, "make_frame", broken)
    with pytest.raises(OutputError, match="No space left"):
        upscale_video(src, tmp_path / "out.mkv", Cubic(), VideoOptions())
    assert leftovers(tmp_path, {"in.mkv"}) == [] and no_pipeline_threads()


def test_wrong_upscaler_output_is_reported(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=6, audio=False, subtitles=False)

    class Wrong(Cubic):
        def upscale(self, rgb: np.ndarray) -> np.ndarray:
            return rgb

    with pytest.raises(TadsrError, match="shape"):
        upscale_video(src, tmp_path / "out.mkv", Wrong(), VideoOptions())
    assert leftovers(tmp_path, {"in.mkv"}) == []


def test_output_problems(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=3, audio=False, subtitles=False)
    with pytest.raises(OutputError, match="overwrite the input"):
        upscale_video(src, src, Cubic(), VideoOptions())
    with pytest.raises(OutputError, match="cannot hold"):
        upscale_video(src, tmp_path / "out.webm", Cubic(), VideoOptions(codec="libx264"))
    with pytest.raises(OutputError, match="not available"):
        upscale_video(src, tmp_path / "out.mkv", Cubic(), VideoOptions(codec="no-such-codec"))
    assert leftovers(tmp_path, {"in.mkv"}) == []


_SIGINT_SCRIPT = """
import sys, time
from pathlib import Path
from tests.test_video import Cubic
from tadsr_cli.pipeline.video import VideoOptions, upscale_video

class Slow(Cubic):
    def upscale(self, rgb):
        if self.calls == 2:
            print("upscaling", flush=True)
        time.sleep(0.2)
        return super().upscale(rgb)

d = Path(sys.argv[1])
try:
    upscale_video(d / "in.mkv", d / "out.mkv", Slow(), VideoOptions())
except KeyboardInterrupt:
    import threading
    print("interrupted", sorted(p.name for p in d.iterdir()), [t.name for t in threading.enumerate()], flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_ctrl_c_mid_video_cleans_up(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    make_clip(tmp_path / "in.mkv", n=24)
    root = Path(__file__).resolve().parents[1]
    p = subprocess.Popen(
        [sys.executable, "-c", _SIGINT_SCRIPT, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "upscaling"
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, out
    assert "interrupted ['in.mkv'] ['MainThread']" in out


def test_output_without_extension_uses_the_input_container(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", n=3, subtitles=False)
    rep = upscale_video(src, tmp_path / "out", Cubic(), VideoOptions())
    with av.open(str(tmp_path / "out")) as c:
        assert "matroska" in c.format.name and len(c.streams) == 2
    assert rep.frames_out == 3
