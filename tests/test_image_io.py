"""Image reading/writing round trips and bad inputs (no model: a bicubic stand-in engine)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import ConfigError, InputError, OutputError
from tadsr_cli.pipeline.image_io import ImageOptions, normalize_ext, upscale_image, write_image
from tadsr_cli.pipeline.image_read import read_image, read_samples, to_float01
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler


class BicubicEngine:
    name = "bicubic"
    scale = 4
    lq_multiple = 8
    latent_channels = 2

    def run(self, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)


@pytest.fixture
def up() -> Upscaler:
    return Upscaler(BicubicEngine(), TileOptions(tile=32, overlap=8))


def rgb8(h: int, w: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], axis=2)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".part-" in p.name]


# ---- round trips -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_formats_roundtrip(tmp_path, up, ext):
    src = tmp_path / f"in{ext}"
    Image.fromarray(rgb8(20, 28)).save(src)
    dst = tmp_path / f"out{ext}"
    res = upscale_image(src, dst, up)
    assert res.out_size == (112, 80) and res.in_size == (28, 20)
    with Image.open(dst) as im:
        assert im.size == (112, 80) and im.mode == "RGB"
        assert im.format == {".jpg": "JPEG", ".tif": "TIFF"}.get(ext, ext[1:].upper())
    assert no_temp_files(tmp_path)


def test_alpha_kept_and_upscaled_separately(tmp_path, up):
    rgba = np.dstack([rgb8(16, 24), np.zeros((16, 24), np.uint8)])
    rgba[4:12, 6:18, 3] = 255  # an opaque rectangle on a transparent background
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)
    upscale_image(src, tmp_path / "a_x4.png", up)
    with Image.open(tmp_path / "a_x4.png") as im:
        assert im.mode == "RGBA" and im.size == (96, 64)
        a = np.asarray(im)[..., 3]
    ref = np.clip(cv2.resize(rgba[..., 3].astype(np.float32) / 255, (96, 64), interpolation=cv2.INTER_CUBIC), 0, 1)
    assert np.abs(a.astype(np.float32) / 255 - ref).max() <= 1 / 255 + 1e-6
    assert a[0, 0] == 0 and a[32, 48] == 255
    # WebP keeps alpha too; JPEG composites over white
    upscale_image(src, tmp_path / "a.webp", up)
    with Image.open(tmp_path / "a.webp") as im:
        assert im.mode == "RGBA"
    upscale_image(src, tmp_path / "a.jpg", up)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.mode == "RGB" and np.asarray(im)[0, 0].min() > 240


def test_16bit_png_and_tiff_stay_16bit(tmp_path, up):
    rng = np.random.default_rng(0)
    base = (rng.random((12, 10, 3)) * 60000 + 1000).astype(np.uint16)
    for ext in (".png", ".tif"):
        src = tmp_path / f"deep{ext}"
        cv2.imwrite(str(src), base[..., ::-1])
        img = read_image(src)
        assert img.bit_depth == 16 and not img.grayscale
        # full precision read (Pillow would give 8 bits)
        np.testing.assert_allclose(img.rgb, base.astype(np.float32) / 65535, atol=1e-6)
        dst = tmp_path / f"deep_x4{ext}"
        upscale_image(src, dst, up)
        out = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == (48, 40, 3)
        # values not quantised to 8 bits
        assert np.any(out % 257 != 0)
    # 16-bit with alpha
    rgba = np.dstack([base, np.full((12, 10), 30000, np.uint16)])
    cv2.imwrite(str(tmp_path / "deepa.png"), rgba[..., [2, 1, 0, 3]])
    upscale_image(tmp_path / "deepa.png", tmp_path / "deepa_x4.png", up)
    out = cv2.imread(str(tmp_path / "deepa_x4.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (48, 40, 4) and abs(int(out[20, 20, 3]) - 30000) <= 2
    # 16-bit source to JPEG: 8-bit output
    upscale_image(tmp_path / "deep.png", tmp_path / "deep.jpg", up)
    with Image.open(tmp_path / "deep.jpg") as im:
        assert im.mode == "RGB"


def test_grayscale_stays_grayscale(tmp_path, up):
    g = rgb8(10, 14)[..., 0]
    Image.fromarray(g).save(tmp_path / "g.png")
    upscale_image(tmp_path / "g.png", tmp_path / "g_x4.png", up)
    with Image.open(tmp_path / "g_x4.png") as im:
        assert im.mode == "L" and im.size == (56, 40)
    g16 = (np.random.default_rng(1).random((10, 14)) * 65535).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    upscale_image(tmp_path / "g16.png", tmp_path / "g16_x4.png", up)
    with Image.open(tmp_path / "g16_x4.png") as im:
        assert im.mode.startswith("I;16") and im.size == (56, 40)
    la = np.dstack([g, np.full_like(g, 128)])
    Image.fromarray(la).save(tmp_path / "la.png")
    upscale_image(tmp_path / "la.png", tmp_path / "la_x4.png", up)
    with Image.open(tmp_path / "la_x4.png") as im:
        assert im.mode == "LA"
    Image.fromarray(g).save(tmp_path / "g.jpg")
    upscale_image(tmp_path / "g.jpg", tmp_path / "g_x4.jpg", up)
    with Image.open(tmp_path / "g_x4.jpg") as im:
        assert im.mode == "L"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    arr = rgb8(6, 10)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: kept in the output
    src = tmp_path / "o.jpg"
    im.save(src, exif=exif.tobytes(), quality=100, subsampling=0)
    with Image.open(src) as ref_im:
        ref = np.asarray(ImageOps.exif_transpose(ref_im).convert("RGB")).astype(np.float32) / 255
    img = read_image(src)
    np.testing.assert_allclose(img.rgb, ref, atol=1e-6)
    dst = tmp_path / "o_x4.jpg"
    upscale_image(src, dst, Upscaler(BicubicEngine(), TileOptions(tile=0)))
    with Image.open(dst) as out:
        assert out.size == (ref.shape[1] * 4, ref.shape[0] * 4)
        ex = out.getexif()
        assert ex.get(0x0112, 1) == 1 and ex.get(0x010F) == "TestCam"


def test_icc_profile_carried(tmp_path, up):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for ext in (".png", ".jpg", ".webp", ".tif"):
        src = tmp_path / f"icc{ext}"
        Image.fromarray(rgb8(8, 8)).save(src, icc_profile=icc)
        upscale_image(src, tmp_path / f"icc_x4{ext}", up)
        with Image.open(tmp_path / f"icc_x4{ext}") as im:
            assert im.info.get("icc_profile") == icc, ext
    # 16-bit PNG (written by OpenCV) gets an iCCP chunk inserted
    deep = tmp_path / "icc16.png"
    Image.fromarray(rgb8(8, 8)).save(deep, icc_profile=icc)
    arr = cv2.imread(str(deep), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", arr)
    data = buf.tobytes()
    chunk = b"ICC Profile\x00\x00" + zlib.compress(icc)
    data = data[:33] + len(chunk).to_bytes(4, "big") + b"iCCP" + chunk + zlib.crc32(b"iCCP" + chunk).to_bytes(4, "big") + data[33:]
    deep.write_bytes(data)
    assert read_image(deep).icc_profile == icc
    upscale_image(deep, tmp_path / "icc16_x4.png", up)
    with Image.open(tmp_path / "icc16_x4.png") as im:
        assert im.info.get("icc_profile") == icc
    assert cv2.imread(str(tmp_path / "icc16_x4.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_outscale_and_quality(tmp_path, up):
    src = tmp_path / "s.png"
    Image.fromarray(rgb8(20, 30)).save(src)
    res = upscale_image(src, tmp_path / "s2.png", up, ImageOptions(outscale=2))
    assert res.out_size == (60, 40)
    res = upscale_image(src, tmp_path / "s35.png", up, ImageOptions(outscale=3.5))
    with Image.open(tmp_path / "s35.png") as im:
        assert im.size == (105, 70)
    upscale_image(src, tmp_path / "lo.jpg", up, ImageOptions(jpeg_quality=20))
    upscale_image(src, tmp_path / "hi.jpg", up, ImageOptions(jpeg_quality=98))
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size
    for bad in (ImageOptions(outscale=0), ImageOptions(jpeg_quality=0), ImageOptions(max_pixels=0)):
        with pytest.raises(ConfigError):
            upscale_image(src, tmp_path / "x.png", up, bad)
    assert normalize_ext("JPG") == ".jpg" and normalize_ext(".tiff") == ".tiff"
    with pytest.raises(ConfigError):
        normalize_ext("gif")


# ---- bad inputs --------------------------------------------------------------------------------------------------
def test_zero_byte_and_non_image(tmp_path, up):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        upscale_image(tmp_path / "empty.png", tmp_path / "o.png", up)
    (tmp_path / "notes.jpg").write_text("hello, not an image\n")
    with pytest.raises(InputError, match="not a recognised image"):
        read_image(tmp_path / "notes.jpg")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    buf = io.BytesIO()
    Image.fromarray(rgb8(8, 8)).save(buf, format="PPM")
    (tmp_path / "pic.ppm").write_bytes(buf.getvalue())
    with pytest.raises(InputError, match="PPM images are not supported"):
        read_image(tmp_path / "pic.ppm")
    Image.fromarray(rgb8(8, 8)).save(tmp_path / "still.gif")  # GIF is read (first frame), never written
    assert read_image(tmp_path / "still.gif").rgb.shape == (8, 8, 3)
    assert no_temp_files(tmp_path)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("TIFF", ".tif"),
                                     ("BMP", ".bmp")])
def test_truncated(tmp_path, up, fmt, ext):
    buf = io.BytesIO()
    Image.fromarray(rgb8(64, 64)).save(buf, format=fmt)
    data = buf.getvalue()
    src = tmp_path / f"cut{ext}"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as ei:
        upscale_image(src, tmp_path / f"cut_x4{ext}", up)
    assert "\n" not in str(ei.value)
    assert not (tmp_path / f"cut_x4{ext}").exists() and no_temp_files(tmp_path)


def test_mislabelled_extension_decodes_by_content(tmp_path, up, caplog):
    src = tmp_path / "really_png.jpg"
    Image.fromarray(rgb8(8, 12)).save(src, format="PNG")
    img = read_image(src)
    assert img.format == "PNG"
    assert "content is PNG" in caplog.text
    upscale_image(src, tmp_path / "out.jpg", up)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.format == "JPEG" and im.size == (48, 32)


def test_too_large_refused_before_decoding(tmp_path, up, monkeypatch):
    src = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(src)
    loads = []
    real_load = Image.Image.load

    def spy(self):
        loads.append(1)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    with pytest.raises(InputError, match=r"300x200 .* above the limit .*--max-pixels"):
        read_image(src, max_pixels=50_000)
    assert not loads  # refused from the header alone
    monkeypatch.undo()
    assert read_image(src, max_pixels=60_000).width == 300
    # a "decompression bomb" header far above Pillow's own limit still gives our message
    bomb = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(bomb)
    data = bytearray(bomb.read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    bomb.write_bytes(bytes(data))
    with pytest.raises(InputError, match="--max-pixels"):
        read_image(bomb)


def test_one_by_one_image(tmp_path, up):
    Image.new("RGB", (1, 1), (200, 10, 30)).save(tmp_path / "dot.png")
    upscale_image(tmp_path / "dot.png", tmp_path / "dot_x4.png", up)
    with Image.open(tmp_path / "dot_x4.png") as im:
        assert im.size == (4, 4)
        assert np.abs(np.asarray(im).astype(int) - [200, 10, 30]).max() <= 1


def test_never_overwrites_input_and_unwritable_folder(tmp_path, up):
    src = tmp_path / "keep.png"
    Image.fromarray(rgb8(8, 8)).save(src)
    before = src.read_bytes()
    with pytest.raises(OutputError, match="overwrite the input"):
        upscale_image(src, tmp_path / "." / "keep.png", up)
    assert src.read_bytes() == before
    # an output "folder" that is a file: cannot be created
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        upscale_image(src, tmp_path / "blocker" / "sub" / "o.png", up)
    with pytest.raises(OutputError, match="unknown image format"):
        upscale_image(src, tmp_path / "o.xyz", up)


def test_failure_during_processing_leaves_nothing(tmp_path):
    class Boom(BicubicEngine):
        def run(self, lq, noise):
            raise KeyboardInterrupt

    src = tmp_path / "k.png"
    Image.fromarray(rgb8(8, 8)).save(src)
    with pytest.raises(KeyboardInterrupt):
        upscale_image(src, tmp_path / "k_x4.png", Upscaler(Boom()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.png"]


def test_atomic_write_path(tmp_path):
    dst = tmp_path / "f.txt"
    with atomic_write_path(dst) as tmp:
        tmp.write_text("new")
        assert not dst.exists()
    assert dst.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_write_path(dst) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert dst.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    write_image(tmp_path / "w.png", np.zeros((2, 2, 3), np.float32))
    assert Image.open(tmp_path / "w.png").size == (2, 2)


# ---- the one reader for eval and training data ------------------------------------------------------------------
def test_samples_are_the_file_values_exactly(tmp_path):
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, size=(9, 7, 3), dtype=np.uint16)
    flat = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])
    assert cv2.imwrite(str(tmp_path / "flat.png"), flat[..., ::-1])
    got16, got8 = read_samples(tmp_path / "deep.png"), read_samples(tmp_path / "flat.png")
    assert got16.dtype == np.uint16 and got8.dtype == np.uint8
    np.testing.assert_array_equal(got16, deep)
    np.testing.assert_array_equal(got8, flat)
    # the float view is the reader's own conversion, bit for bit
    np.testing.assert_array_equal(to_float01(got16), read_image(tmp_path / "deep.png").rgb)
    np.testing.assert_array_equal(to_float01(got8), read_image(tmp_path / "flat.png").rgb)


def test_eval_and_training_read_what_upscale_reads(tmp_path):
    """An EXIF-rotated photo: eval's pairing and the training data see the rotated pixels, as `upscale` does."""
    from tadsr_cli.eval.images import pair_folders
    from tadsr_cli.train.datasets import ValidationSet

    im = Image.fromarray(rgb8(8, 12))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "lq").mkdir()
    src = tmp_path / "lq" / "r.jpg"
    im.save(src, exif=exif.tobytes(), quality=100, subsampling=0)
    shown = read_image(src)
    assert (shown.height, shown.width) == (12, 8)
    pairing = pair_folders(tmp_path / "lq", None)
    np.testing.assert_array_equal(to_float01(read_samples(pairing.lq["r"])), shown.rgb)
    item = ValidationSet([src], scale=4, gt_size=None, seed=0)[0]
    assert tuple(item["gt"].shape) == (3, 12, 8)
    np.testing.assert_allclose(item["gt"].permute(1, 2, 0).numpy(), shown.rgb * 2 - 1, atol=1e-6)


def test_to_float01():
    assert to_float01(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_float01(np.array([65535], np.uint16), np.float64).dtype == np.float64
    half = np.full((2, 2), 0.5, np.float32)
    assert to_float01(half) is half  # floats are taken as they are
    with pytest.raises(InputError, match="int32"):
        to_float01(np.zeros(3, np.int32))
