"""Hostile inputs: messy folders, damaged media, odd paths, stranger's model files, signals and bad options.

Every failure must be one line naming the file and the cause; exit 1 for a run with failures, 2 for usage errors,
130 for interrupts; the rest of a batch goes on; inputs stay byte-identical; no temp files are left behind.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tadsr_cli.base.errors import CheckpointError, ConfigError, InputError
from tadsr_cli.models import catalog
from tadsr_cli.models.checkpoints import load_model_file, read_state_dict, save_model
from tadsr_cli.models.config import ModelConfig
from tadsr_cli.models.presets import tiny_test_config, tiny_vq_test_config
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.pipeline.image_read import read_image
from tests.test_batch import img, run_cli

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(DiffusionSR(tiny_test_config()), path)
    return path


def flat(text: str) -> str:
    return " ".join(text.split())


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Bytes of every regular file below `folder` (to prove inputs are untouched)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".part-" in p.name]


def png_bytes(w: int = 12, h: int = 10, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(w: int = 64, h: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# ---- paths: links, folders, devices, names -----------------------------------------------------------------------
def test_symlink_loop_fails_alone_and_the_batch_goes_on(tmp_path, model_file, capsys):
    src = tmp_path / "in"
    img(src / "a.png")
    img(src / "c.png", seed=2)
    (src / "loop.png").symlink_to("loop.png")
    (src / "dangling.png").symlink_to("nowhere.png")
    os.symlink(src, src / "selfdir")  # a folder link back to the top: never followed
    before = snapshot(src)
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file)], capsys)
    assert code == 1, err
    text = flat(err)
    assert "loop.png: cannot read (symbolic link loop)" in text
    assert "dangling.png: broken symbolic link" in text
    assert len(errors(err)) == 2 and "Traceback" not in err
    assert (tmp_path / "out" / "a_x4.png").is_file() and (tmp_path / "out" / "c_x4.png").is_file()
    assert snapshot(src) == before and not temp_files(tmp_path)


@pytest.mark.parametrize("inside", [".", "sub"])
def test_output_tree_inside_the_input_tree_is_never_an_input(tmp_path, model_file, capsys, inside):
    src = tmp_path / "in"
    img(src / "a.png")
    img(src / "sub" / "b.png", seed=1)
    out = src if inside == "." else src / "sub"
    for _ in range(2):  # the re-run must not upscale its own outputs
        code, _, err = run_cli(["batch", str(src), "-o", str(out), "--model", str(model_file), "-q"], capsys)
        assert code == 0, err
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    assert not [n for n in names if "_x4_x4" in n], names
    if inside == ".":
        assert names == ["a.png", "a_x4.png", "sub/b.png", "sub/b_x4.png"]


def test_folder_where_the_output_file_belongs(tmp_path, model_file, capsys):
    src = img(tmp_path / "a.png")
    (tmp_path / "a_x4.png").mkdir()
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file)], capsys)
    assert code == 1
    assert "a_x4.png: a folder is in the way of the output file" in flat(err)
    assert "skipped a.png" not in flat(err) and "output exists" not in err and (tmp_path / "a_x4.png").is_dir()


def test_fifo_and_device_inputs_are_refused_without_blocking(tmp_path, model_file, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    src = tmp_path / "in"
    img(src / "a.png")
    os.mkfifo(src / "pipe.png")
    t0 = time.monotonic()
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file)], capsys)
    assert code == 1 and "pipe.png: not a regular file (a FIFO (named pipe))" in flat(err)
    code, _, err = run_cli(["upscale", "/dev/zero", "-o", str(tmp_path / "z.png"), "--model", str(model_file)],
                           capsys)
    assert code == 1 and "/dev/zero: not a regular file (a character device)" in flat(err)
    assert time.monotonic() - t0 < 600 and (tmp_path / "out" / "a_x4.png").is_file()


def test_fifo_or_device_as_output_is_never_replaced(tmp_path, model_file, capsys):
    src = img(tmp_path / "a.png")
    os.mkfifo(tmp_path / "out.png")
    code, _, err = run_cli(["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model", str(model_file),
                            "--overwrite"], capsys)
    assert code == 1 and "out.png: exists and is a FIFO (named pipe); refusing to replace it" in flat(err)
    assert (tmp_path / "out.png").is_fifo() and not temp_files(tmp_path)


def test_non_utf8_and_very_long_names(tmp_path, model_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    odd = src / os.fsdecode(b"caf\xe9 \x1b[31mred.png")  # Latin-1 byte and an ANSI escape in the name
    odd.write_bytes(png_bytes())
    long_ok = src / ("L" * 240 + ".png")  # output name 247 bytes: fits, and so must its temp file
    long_ok.write_bytes(png_bytes(seed=1))
    too_long = src / ("T" * 250 + ".png")  # input fits (254 bytes), the output name (257) cannot
    too_long.write_bytes(png_bytes(seed=2))
    before = snapshot(src)
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file)], capsys)
    assert code == 1, err
    assert "output file name too long (257 bytes; the limit is 255)" in flat(err)
    assert len(errors(err)) == 1 and "\x1b" not in err
    assert "caf\\xe9 \\x1b[31mred.png" in err  # shown escaped, never interpreted by the terminal
    out = {p.name for p in (tmp_path / "out").iterdir()}
    assert os.fsdecode(b"caf\xe9 \x1b[31mred_x4.png") in out and "L" * 240 + "_x4.png" in out
    assert snapshot(src) == before and not temp_files(tmp_path)


def test_empty_folder_and_missing_folder(tmp_path, model_file, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["batch", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--model",
                            str(model_file)], capsys)
    assert code == 1 and errors(err) == [f"error: {tmp_path / 'empty'}: no image or video files to process"], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "empty_x4").exists()  # nothing to do creates nothing
    code, _, err = run_cli(["batch", str(tmp_path / "empty"), "--model", str(model_file)], capsys)
    assert code == 1 and len(errors(err)) == 1 and not (tmp_path / "empty_x4").exists()
    code, _, err = run_cli(["batch", str(tmp_path / "nope"), "--model", str(model_file)], capsys)
    assert code == 2 and "nope: not a folder (it does not exist)" in flat(err)


def test_file_removed_or_replaced_while_the_batch_runs(tmp_path, model_file, capsys, monkeypatch):
    from tadsr_cli.pipeline import image_io

    src = tmp_path / "in"
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png")):
        img(src / name, seed=i)
    real = image_io.upscale_image

    def meddling(s, d, *args, **kwargs):
        if Path(s).name == "a.png":
            (src / "b.png").unlink()  # vanished after discovery
            (src / "c.png").write_bytes(b"not an image any more")
        return real(s, d, *args, **kwargs)

    monkeypatch.setattr(image_io, "upscale_image", meddling)
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file)], capsys)
    assert code == 1
    text = flat(err)
    assert "b.png: no such file" in text and "c.png: not a recognised image" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "d_x4.png"]


# ---- permissions and full disks ------------------------------------------------------------------------------------
def test_read_only_output_folder(tmp_path, model_file, capsys, monkeypatch):
    src = img(tmp_path / "a.png")
    out = tmp_path / "ro"
    out.mkdir()
    if IS_ROOT:  # root writes anywhere: make the folder refuse like a read-only one would
        import tempfile

        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == out:
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        code, _, err = run_cli(["upscale", str(src), "-o", str(out), "--model", str(model_file)], capsys)
        assert code == 1 and f"{out}: cannot write here (Permission denied)" in flat(err)
    else:
        out.chmod(0o555)
        try:
            code, _, err = run_cli(["upscale", str(src), "-o", str(out), "--model", str(model_file)], capsys)
        finally:
            out.chmod(0o755)
        assert code == 2 and "output folder is not writable" in flat(err)
    assert list(out.iterdir()) == []


def test_unreadable_input(tmp_path, model_file, capsys, monkeypatch):
    src = tmp_path / "in"
    img(src / "a.png")
    locked = img(src / "locked.png", seed=1)
    if IS_ROOT:  # permission bits do not stop root: refuse the open like the kernel would
        from tadsr_cli.pipeline import paths

        real_open = os.open

        def guarded(path, *args, **kwargs):
            if Path(os.fsdecode(path)).name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(paths.os, "open", guarded)
    else:
        locked.chmod(0)
    try:
        code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file)],
                               capsys)
    finally:
        locked.chmod(0o644)
    assert code == 1 and "locked.png: cannot read (permission denied)" in flat(err)
    assert (tmp_path / "out" / "a_x4.png").is_file() and not (tmp_path / "out" / "locked_x4.png").exists()


def _cli_subprocess(args: list[str], prelude: str = "", shell_prefix: str = "", **kw) -> subprocess.Popen:
    code = textwrap.dedent(prelude) + f"\nfrom tadsr_cli.cli import main\nmain({args!r})\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", code]
    if shell_prefix:
        cmd = ["/bin/sh", "-c", f'{shell_prefix} && exec "$0" -c "$1"', sys.executable, code]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", **kw)


@pytest.mark.skipif(sys.platform == "win32", reason="ulimit is POSIX")
def test_disk_full_leaves_nothing(tmp_path, model_file):
    src = tmp_path / "in"
    img(src / "big.png", 32, 32)
    before = snapshot(src)
    # 8 KiB per file: the input folder stays readable, the 128x128 PNG output cannot be written.
    proc = _cli_subprocess(["upscale", str(src / "big.png"), "-o", str(tmp_path / "out"), "--model",
                            str(model_file), "-q"], shell_prefix="ulimit -f 16")
    _, err = proc.communicate(timeout=600)  # generous: CI machines can be busy
    assert proc.returncode == 1, err
    assert "big.png" in err and "file too large" in err.lower() and "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == [] and snapshot(src) == before


# ---- damaged images ------------------------------------------------------------------------------------------------
def test_png_with_corrupt_idat_fails_loudly(tmp_path, model_file, capsys):
    data = bytearray(png_bytes(64, 64))
    i = data.find(b"IDAT")
    n = struct.unpack(">I", data[i - 4:i])[0]
    data[i + 4 + n // 2] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match="bad.png: damaged or truncated image"):
        read_image(tmp_path / "bad.png")
    # Same damage with a recomputed CRC (zlib still notices) and a CRC error alone (our chunk check notices).
    fixed = bytearray(data)
    fixed[i + 4 + n:i + 8 + n] = struct.pack(">I", zlib.crc32(bytes(fixed[i:i + 4 + n])))
    (tmp_path / "crc_ok.png").write_bytes(bytes(fixed))
    crc_only = bytearray(png_bytes(64, 64))
    crc_only[i + 4 + n] ^= 0x01
    (tmp_path / "crc.png").write_bytes(bytes(crc_only))
    with pytest.raises(InputError, match="CRC error in the IDAT chunk"):
        read_image(tmp_path / "crc.png")
    code, _, err = run_cli(["upscale", *(str(tmp_path / n) for n in ("bad.png", "crc_ok.png", "crc.png")),
                            "--model", str(model_file)], capsys)
    assert code == 1 and len(errors(err)) == 3 and not list(tmp_path.glob("*_x4.png"))


@pytest.mark.parametrize("tail", ["eoi", "zeros"])
def test_truncated_jpeg_padded_by_the_decoder_is_reported(tmp_path, tail):
    data = jpeg_bytes()
    cut = data[: len(data) // 2]
    cut += b"\xff\xd9" if tail == "eoi" else bytes(len(data) - len(cut))  # end marker / zero-filled download
    (tmp_path / "cut.jpg").write_bytes(cut)
    with Image.open(tmp_path / "cut.jpg") as im:
        im.load()  # Pillow alone would accept it (grey/garbage fill)
    with pytest.raises(InputError, match="cut.jpg: damaged or truncated image .*JPEG data ends early"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "good.jpg").write_bytes(data)
    assert read_image(tmp_path / "good.jpg").width == 64


def test_huge_declared_size_is_refused_before_decoding(tmp_path, model_file, capsys):
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    code, _, err = run_cli(["upscale", str(tmp_path / "bomb.png"), "--model", str(model_file)], capsys)
    assert code == 1 and "bomb.png: 100000x100000 (10000.0 MP) is above the limit" in flat(err)


def test_mislabelled_extensions(tmp_path, model_file, capsys, caplog):
    (tmp_path / "png_really.jpg").write_bytes(png_bytes())
    (tmp_path / "text.png").write_text("plain text, not an image\n")
    code, _, err = run_cli(["upscale", str(tmp_path / "png_really.jpg"), str(tmp_path / "text.png"), "--model",
                            str(model_file)], capsys)
    assert code == 1
    assert "text.png: not a recognised image" in flat(err) and len(errors(err)) == 1
    with Image.open(tmp_path / "png_really_x4.jpg") as im:
        assert im.format == "JPEG" and im.size == (48, 40)  # decoded by content, written by the extension
    assert "the content is PNG, not JPEG" in caplog.text + err


def test_animated_gif_first_frame_with_a_warning(tmp_path, model_file, capsys, caplog):
    frames = [Image.new("RGB", (10, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, _, err = run_cli(["upscale", str(tmp_path / "anim.gif"), "--model", str(model_file)], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "anim_x4.png") as im:
        assert im.format == "PNG" and im.size == (40, 32)
    text = flat(caplog.text + err)
    assert "animated GIF with 3 frames; only the first frame is upscaled, as a still image" in text
    assert not list(tmp_path.glob("*.mp4"))


# ---- videos that are not videos -------------------------------------------------------------------------------------
def test_videos_that_are_not_videos(tmp_path, model_file, capsys):
    import av
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for i in range(6):
            arr = (np.random.default_rng(i).random((24, 32, 3)) * 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    data = full.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with av.open(str(tmp_path / "zero.mp4"), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        out.start_encoding()
    with av.open(str(tmp_path / "sound.mp4"), "w") as c:
        a = c.add_stream("aac", rate=48000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 48000, 0
        for p in [*a.encode(af), *a.encode()]:
            c.mux(p)
    (tmp_path / "sound_named.png").write_bytes((tmp_path / "sound.mp4").read_bytes())
    names = ("cut.mp4", "zero.mp4", "sound.mp4", "sound_named.png")
    code, _, err = run_cli(["upscale", *(str(tmp_path / n) for n in names), "--model", str(model_file)], capsys)
    assert code == 1
    text = flat(err)
    assert "not a recognised image" not in text and len(errors(err)) == 4
    assert "cut.mp4: not a readable video (truncated, damaged" in text
    assert "zero.mp4: no video frames" in text
    assert "sound.mp4: no video stream (audio only)" in text and "sound_named.png: no video stream" in text
    assert not temp_files(tmp_path) and not list(tmp_path.glob("*_x4*"))


# ---- options -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--max-frames", "0"], ["--max-frames", "-3"], ["--crf", "999"],
                                    ["--jpeg-quality", "0"], ["--tile-batch", "0"],
                                    ["--max-pixels", "0"], ["--steps", "0"], ["--outscale", "100"]])
def test_out_of_range_options_are_usage_errors(tmp_path, model_file, capsys, option):
    src = img(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), *option], capsys)
    assert code == 2, err
    text = flat(err.replace("\u2502", " "))
    assert f"Invalid value for '{option[0]}'" in text and "than or equal to" in text
    assert not (tmp_path / "a_x4.png").exists()


@pytest.mark.parametrize("value", ["-1", "big"])
def test_bad_tile_is_a_usage_error(tmp_path, model_file, capsys, value):
    src = img(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--tile", value], capsys)
    assert code == 2 and "--tile" in err and "auto" in err, err  # --tile takes auto, 0 or a size
    assert not (tmp_path / "a_x4.png").exists()


# ---- model files from strangers ---------------------------------------------------------------------------------
def _retagged(src: Path, dst: Path, edit) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(src))
    cfg = __import__("json").loads(meta["config"])
    tensors = edit(cfg, tensors) or tensors
    meta["config"] = __import__("json").dumps(cfg)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_model_config_with_wrong_types(tmp_path, model_file, capsys):
    def edit(cfg, tensors):
        cfg["denoiser"]["model_channels"] = "32"

    bad = _retagged(model_file, tmp_path / "bad.safetensors", edit)
    src = img(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "--model", str(bad)], capsys)
    assert code == 2 and "Traceback" not in err
    assert "model config: field denoiser.model_channels must be an integer, got str '32'" in flat(err)
    for data, field in [({"scale": "4"}, "scale"), ({"schedule": {"steps": 1.5}}, "schedule.steps"),
                        ({"denoiser": {"channel_mult": [1, None]}}, "denoiser.channel_mult"),
                        ({"denoiser": {"model_channels": -5}}, "denoiser.model_channels")]:
        with pytest.raises(ConfigError, match=f"model config: field {field} must be"):
            ModelConfig.from_dict(data)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape mismatch"])
def test_model_file_with_missing_extra_or_misshaped_tensors(tmp_path, model_file, monkeypatch, damage):
    def edit(cfg, tensors):
        key = sorted(tensors)[3]
        if damage == "missing":
            del tensors[key]
        elif damage == "unexpected":
            tensors["denoiser.extra.weight"] = torch.zeros(2)
        else:
            tensors[key] = torch.zeros(tuple(tensors[key].shape) + (2,))

    bad = _retagged(model_file, tmp_path / "bad.safetensors", edit)
    from tadsr_cli.models import checkpoints

    def never(*a, **k):
        raise AssertionError("the network was built before the file was checked")

    monkeypatch.setattr(checkpoints, "load_state_dict_strict", never)
    with pytest.raises(CheckpointError, match=f"bad.safetensors does not match the architecture — 1 {damage}"):
        load_model_file(bad)


def test_convert_and_pull_check_names_and_shapes_before_building(tmp_path, capsys, monkeypatch):
    from tadsr_cli.models import checkpoints

    model = DiffusionSR(tiny_vq_test_config())
    rel = tmp_path / "release"
    rel.mkdir()
    sd = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    sd[sorted(sd)[0]] = torch.zeros(3, 3)
    torch.save({"state_dict": sd}, rel / "den.pth")
    entry = catalog.RegistryEntry(name="small", description="t", steps=15, make_config=tiny_vq_test_config,
                                  denoiser=catalog.RemoteFile("https://example.invalid/den.pth"),
                                  autoencoder=catalog.RemoteFile("https://example.invalid/vq.pth"))
    (rel / "vq.pth").write_bytes(b"\0")  # never reached: the denoiser is refused first
    monkeypatch.setitem(catalog.REGISTRY, "small", entry)
    monkeypatch.setenv("TADSR_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(checkpoints, "load_state_dict_strict",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("built before checking")))
    before = snapshot(rel)
    code, _, err = run_cli(["models", "convert", "--denoiser", str(rel / "den.pth"), "--autoencoder",
                            str(rel / "vq.pth"), "--like", "small", "-o", str(tmp_path / "m.safetensors")], capsys)
    assert code == 2 and "den.pth does not match the architecture — 1 shape mismatch" in flat(err)
    code, _, err = run_cli(["models", "pull", "small", "--from", str(rel)], capsys)
    assert code == 2 and "den.pth does not match the architecture" in flat(err)
    assert not (tmp_path / "m.safetensors").exists() and snapshot(rel) == before
    assert not (tmp_path / "home" / "models").exists() or not list((tmp_path / "home" / "models").iterdir())


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_refusal_gives_no_unsafe_advice_and_no_colour_codes(tmp_path, capsys, monkeypatch):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, path)
    with pytest.raises(CheckpointError) as ei:
        read_state_dict(path)
    text = str(ei.value)
    assert "evil.pth: refused" in text and "print" in text and "\n" not in text
    assert "can still be loaded" not in text and "weights_only" not in text and "\x1b" not in text
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    code, _, err = run_cli(["models", "convert", "--denoiser", str(path), "--like", "resshift-realsr-x4-v1",
                            "-o", str(tmp_path / "m.safetensors")], capsys)
    assert code == 2 and "evil.pth: refused" in err and "\x1b[3" not in err and "can still be loaded" not in err


def test_damaged_pickle_is_one_line(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(pickle.dumps({"a": 1})[:5])
    with pytest.raises(CheckpointError, match="junk.pth") as ei:
        read_state_dict(path)
    assert "\n" not in str(ei.value)


# ---- signals -------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_second_ctrl_c_still_exits_130_and_cleans_up(tmp_path, model_file):
    src = img(tmp_path / "a.png")
    marks = tmp_path / "marks"
    prelude = f"""
        import time
        from pathlib import Path
        from tadsr_cli.commands import upscale
        from tadsr_cli.base import atomic
        from tadsr_cli.pipeline import progress
        marks = Path({str(marks)!r})

        def process(self, job, reporter):
            with atomic.atomic_write_path(job.dst) as tmp:
                tmp.write_bytes(b"half-written")
                (marks / "working").touch()
                time.sleep(60)

        real_summary = progress.Reporter.summary

        def slow_summary(self, *a, **k):
            (marks / "cleanup").touch()
            time.sleep(1.5)  # the second Ctrl-C lands here
            return real_summary(self, *a, **k)

        upscale.Session.process = process
        progress.Reporter.summary = slow_summary
    """
    marks.mkdir()
    proc = _cli_subprocess(["upscale", str(src), "--model", str(model_file)], prelude=prelude)

    def wait_for(name: str) -> None:
        deadline = time.monotonic() + 600
        while not (marks / name).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)

    wait_for("working")
    proc.send_signal(signal.SIGINT)
    wait_for("cleanup")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not temp_files(tmp_path) and not (tmp_path / "a_x4.png").exists()
