"""`tadsr upscale` on video: --outscale, --ext picks the container, an interrupted run resumes, --overwrite restarts."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tadsr_cli.pipeline.upscaler import Upscaler
from tadsr_cli.pipeline.video_segments import work_dir_for
from tests.test_batch import run_cli
from tests.test_upscale_cli import model_file  # noqa: F401 - the tiny model fixture
from tests.test_video import frames, make_clip, packets


def test_outscale_and_ext_for_video(tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture,  # noqa: F811
                                    caplog: pytest.LogCaptureFixture) -> None:
    src = make_clip(tmp_path / "clip.mp4", size=(32, 24), n=4)
    img = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    code, _, err = run_cli(["upscale", str(src), str(img), "--model", str(model_file), "--outscale", "2",
                            "--ext", "mkv", "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    dst = tmp_path / "out" / "clip_x2.mkv"  # the container --ext names; the image keeps its own format
    assert (tmp_path / "out" / "still_x2.png").is_file()
    with av.open(str(dst)) as c:
        assert "matroska" in c.format.name and c.streams.video[0].codec_context.width == 64
    assert len(frames(dst)) == 4 and [b for _, b in packets(dst, "audio")] == [b for _, b in packets(src, "audio")]
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--ext", "webm"], capsys)
    assert code == 0, err  # the default codec follows the container: VP9 in WebM; AAC cannot go in: dropped
    with av.open(str(tmp_path / "clip_x4.webm")) as c:
        assert [s.codec_context.name for s in c.streams] == ["vp9"]
    assert "stream 1:audio:aac not copied" in caplog.text  # one warning line (the CLI logs it to stderr)


def test_interrupted_cli_video_resumes(tmp_path: Path, model_file: Path,  # noqa: F811
                                       capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_clip(tmp_path / "clip.mkv", size=(16, 12), n=60, subtitles=False)
    dst = tmp_path / "clip_x4.mkv"
    real = Upscaler.upscale
    calls = [0]

    def ctrl_c_at_55(self: Upscaler, rgb: np.ndarray, *args: object, **kw: object) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 55:
            raise KeyboardInterrupt
        return real(self, rgb, *args, **kw)

    monkeypatch.setattr(Upscaler, "upscale", ctrl_c_at_55)
    args = ["upscale", str(src), "--model", str(model_file)]
    code, _, _ = run_cli(args, capsys)
    assert code == 130 and not dst.exists() and len(list(work_dir_for(dst).glob("seg-*"))) == 1  # 48 frames kept
    calls[0] = -1000
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "resumed" in err and calls[0] == -1000 + 12  # only the 12 frames after the finished segment
    assert len(frames(dst)) == 60 and not work_dir_for(dst).exists()

    dst.unlink()
    calls[0] = 0
    code, _, _ = run_cli(args, capsys)  # interrupted again: segment 0 kept
    assert code == 130 and len(list(work_dir_for(dst).glob("seg-*"))) == 1
    calls[0] = -1000
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0 and "resumed" not in err and calls[0] == -1000 + 60  # --overwrite started over
