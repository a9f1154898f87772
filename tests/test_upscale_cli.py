"""`tadsr upscale`: output naming, options, bad inputs, JSON progress, videos (through the video module)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_batch import img, run_cli


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import torch

    from tadsr_cli.models.checkpoints import save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    model = DiffusionSR(tiny_test_config())
    with torch.no_grad():  # not plain bicubic: the seed must matter
        model.denoiser.out[-1].weight.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path)
    return path


def flat(text: str) -> str:
    return " ".join(text.split())


def test_default_output_next_to_input(tmp_path, model_file, capsys):
    src = img(tmp_path / "photo.jpg", 14, 9)
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file)], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "photo_x4.jpg") as im:
        assert im.size == (56, 36) and im.format == "JPEG"
    assert "done" in err
    # second run: skipped, exit 0; --overwrite redoes it
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file)], capsys)
    assert code == 0 and "skipped" in err
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--overwrite", "-q"], capsys)
    assert code == 0 and err == ""


def test_output_file_folder_ext_and_seed(tmp_path, model_file, capsys):
    a = img(tmp_path / "a.png", 10, 10)
    b = img(tmp_path / "b.bmp", 8, 6, seed=1)
    code, _, _ = run_cli(["upscale", str(a), "-o", str(tmp_path / "x" / "out.webp"), "--model", str(model_file),
                          "-q"], capsys)
    assert code == 0
    with Image.open(tmp_path / "x" / "out.webp") as im:
        assert im.format == "WEBP" and im.size == (40, 40)
    code, _, _ = run_cli(["upscale", str(a), str(b), "-o", str(tmp_path / "many"), "--ext", "tif",
                          "--model", str(model_file), "-q", "--seed", "3"], capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a_x4.tif", "b_x4.tif"]
    code, _, _ = run_cli(["upscale", str(a), "-o", str(tmp_path / "s4.png"), "--model", str(model_file), "-q",
                          "--seed", "4"], capsys)
    code, _, _ = run_cli(["upscale", str(a), "-o", str(tmp_path / "s3.png"), "--model", str(model_file), "-q",
                          "--seed", "3", "--tile", "16", "--tile-overlap", "4", "--tile-batch", "1"], capsys)
    s3 = np.asarray(Image.open(tmp_path / "s3.png")).astype(int)
    s4 = np.asarray(Image.open(tmp_path / "s4.png")).astype(int)
    m3 = np.asarray(Image.open(tmp_path / "many" / "a_x4.tif")).astype(int)
    assert np.abs(s3 - m3).max() <= 1  # same seed, same output (whatever the tiling here)
    assert np.abs(s3 - s4).max() > 1  # the seed changes the prior noise


def test_json_progress_is_one_object_per_line(tmp_path, model_file, capsys):
    src = img(tmp_path / "j.png", 40, 36)
    code, out, err = run_cli(["upscale", str(src), "--model", str(model_file), "--json-progress", "--tile", "16",
                              "--tile-overlap", "4"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events][:2] == ["start", "file_start"]
    prog = [e for e in events if e["event"] == "progress"]
    assert prog and prog[-1]["done"] == prog[-1]["total"] and prog[-1]["unit"] == "tile"
    end = [e for e in events if e["event"] == "file_end"][0]
    assert end["status"] == "done" and end["output"].endswith("j_x4.png")
    assert events[-1]["event"] == "summary" and events[-1]["done"] == 1


def test_bad_inputs_one_line_each(tmp_path, model_file, capsys):
    good = img(tmp_path / "good.png")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    mis = tmp_path / "mis.webp"
    Image.fromarray((np.random.default_rng(0).random((5, 6, 3)) * 255).astype(np.uint8)).save(mis, format="PNG")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    args = [str(tmp_path / n) for n in ("good.png", "zero.png", "text.jpg", "cut.png", "missing.png", "mis.webp",
                                         "dot.png", "big.png")]
    code, _, err = run_cli(["upscale", *args, "--model", str(model_file), "--max-pixels", "1000"], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5, err
    text = flat(err)
    for expect in ("zero.png: empty file", "text.jpg: not a recognised image", "cut.png: damaged or truncated",
                   "missing.png: no such file", "big.png: 64x64", "--max-pixels"):
        assert expect in text
    assert "Traceback" not in err
    assert (tmp_path / "good_x4.png").is_file()
    assert (tmp_path / "mis_x4.webp").is_file()  # decoded by content
    with Image.open(tmp_path / "dot_x4.png") as im:
        assert im.size == (4, 4)
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]
    assert not (tmp_path / "zero_x4.png").exists() and not (tmp_path / "cut_x4.png").exists()


def test_unwritable_output_and_never_overwrite_input(tmp_path, model_file, capsys):
    src = img(tmp_path / "keep.png")
    before = src.read_bytes()
    code, _, err = run_cli(["upscale", str(src), "-o", str(src), "--model", str(model_file), "--overwrite"], capsys)
    assert code == 1 and "overwrite the input" in flat(err)
    code, _, err = run_cli(["upscale", str(src), "--name", "{stem}", "--model", str(model_file)], capsys)
    assert code == 1 and "overwrite the input" in flat(err)
    assert src.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["upscale", str(src), "-o", str(tmp_path / "afile" / "o.png"), "--model",
                            str(model_file)], capsys)
    assert code == 1 and "cannot write" in flat(err)
    code, _, err = run_cli(["upscale", str(src), str(src), "-o", str(tmp_path / "afile"), "--model",
                            str(model_file)], capsys)
    assert code == 2 and "output folder" in flat(err)


def test_a_folder_with_nothing_to_process_fails_and_creates_nothing(tmp_path, model_file, capsys):
    empty = tmp_path / "emptydir"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")  # ignored files do not count as something to process
    photo = img(tmp_path / "photo.png", 8, 8)
    for args in ([str(empty)], [str(empty), "-o", str(tmp_path / "out")], [str(photo), str(empty)]):
        code, _, err = run_cli(["upscale", *args, "--model", str(model_file)], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and lines == [f"error: {empty}: no image or video files to process"], (args, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["emptydir", "photo.png"], args
        assert [p.name for p in empty.iterdir()] == ["notes.txt"]


def test_usage_errors_exit_2(tmp_path, model_file, capsys):
    src = img(tmp_path / "u.png")
    for extra, msg in ((["--steps", "3"], "--steps 3"), (["--precision", "int4"], "--precision"),
                       (["--sampler", "ddim"], "--sampler"), (["--ext", "gif"], "--ext"),
                       (["--tile", "16", "--tile-overlap", "16"], "--tile-overlap"),
                       (["--backend", "vulkan"], "unknown backend"), (["--outscale", "0"], "--outscale")):
        code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), *extra], capsys)
        assert code == 2 and msg in flat(err), (extra, err)
    code, _, err = run_cli(["upscale", str(src), "--model", str(tmp_path / "nope.safetensors")], capsys)
    assert code == 2 and "nope.safetensors" in flat(err)


def test_teacher_steps(tmp_path, model_file, capsys):
    from tadsr_cli.models.checkpoints import read_model_config

    steps = read_model_config(model_file).schedule.steps
    src = img(tmp_path / "t.png", 8, 8)
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--steps", str(steps), "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "t_x4.png").is_file()


def _make_video(path: Path, frames: int = 3, w: int = 32, h: int = 24) -> None:
    import av
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            arr = (np.random.default_rng(i).random((h, w, 3)) * 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def test_video_is_detected_by_content(tmp_path, model_file, capsys):
    import av

    from tadsr_cli.pipeline import video

    src = tmp_path / "clip.mp4"
    _make_video(src)
    hidden = tmp_path / "clip_named.png"  # a video with an image extension
    hidden.write_bytes(src.read_bytes())
    assert video.is_video(src) and video.is_video(hidden)
    code, out, err = run_cli(["upscale", str(src), str(hidden), "--model", str(model_file), "--json-progress"],
                             capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["kind"] for e in events if e["event"] == "file_start"] == ["video", "video"]
    assert any(e["event"] == "progress" and e["unit"] == "frame" for e in events)
    with av.open(str(tmp_path / "clip_x4.mp4")) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (128, 96)
        assert sum(1 for _ in c.decode(video=0)) == 3
    assert (tmp_path / "clip_named_x4.mp4").is_file()
