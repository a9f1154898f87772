"""Still images out, and the whole job for one image: read (`image_read`), upscale, write.

Writing (`write_image`): format by the output extension, 16-bit where the source was 16-bit and the format allows
it (PNG, TIFF), grayscale stays grayscale, alpha is kept where the format has it (JPEG: composited over white),
ICC profile and EXIF carried where the writer supports them (not for 16-bit colour TIFF). Always atomic.

`upscale_image` ties it together with an `Upscaler`: alpha is upscaled separately with a plain bicubic resize,
`outscale` resizes the model output to a non-native final size.
"""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import ConfigError, OutputError
from tadsr_cli.pipeline.image_read import DEFAULT_MAX_PIXELS, EXT_TO_FORMAT, read_image
from tadsr_cli.pipeline.paths import check_output_file

log = logging.getLogger(__name__)

SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF", "BMP"})


def output_format(path: str | Path) -> str:
    """Pillow format name for an output path (by extension)."""
    ext = Path(path).suffix.lower()
    fmt = EXT_TO_FORMAT.get(ext)
    if fmt is None:
        raise OutputError(f"{path}: unknown image format {ext or '(no extension)'!r}; use one of "
                          f"{', '.join(sorted({e.lstrip('.') for e in EXT_TO_FORMAT}))}")
    return fmt


def normalize_ext(ext: str) -> str:
    """'PNG' / '.png' / 'png' -> '.png'; ConfigError for unknown ones."""
    e = "." + ext.lower().lstrip(".")
    if e not in EXT_TO_FORMAT:
        raise ConfigError(f"--ext {ext!r}: unknown image format; use one of "
                          f"{', '.join(sorted({x.lstrip('.') for x in EXT_TO_FORMAT}))}")
    return e


# ---- writing --------------------------------------------------------------------------------------------------
def to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H x W x 3 array."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


def _quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16, rounded; in row blocks so that no full-size float temporary is made."""
    peak = 65535.0 if bits == 16 else 255.0
    out = np.empty(x.shape, dtype=np.uint16 if bits == 16 else np.uint8)
    row = max(1, int(np.prod(x.shape[1:])))
    step = max(1, (1 << 22) // row)
    for i in range(0, x.shape[0], step):
        y = np.multiply(x[i:i + step], peak, dtype=np.float32)
        np.clip(y, 0.0, peak, out=y)
        np.rint(y, out=y)
        out[i:i + step] = y
    return out


def encode_image(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str, *, bit_depth: int = 8,
                 grayscale: bool = False, icc_profile: bytes | None = None, exif: bytes | None = None,
                 quality: int = 95) -> bytes:
    """Encode to `fmt` ("PNG", "JPEG", "WEBP", "TIFF", "BMP"); returns the file's bytes."""
    if fmt not in ALPHA_FORMATS and alpha is not None:
        a = np.clip(alpha, 0, 1)[..., None]
        rgb = rgb * a + (1.0 - a)  # composite over white
        alpha = None
    bits = 16 if bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS else 8
    if bits == 16 and not (grayscale and alpha is None):
        return _encode_cv2_16(rgb, alpha, fmt, grayscale, icc_profile, exif)
    if grayscale:
        g = to_gray(rgb)
        if bits == 16:
            im = Image.fromarray(_quantize(g, 16))
        elif alpha is not None:
            im = Image.fromarray(np.stack([_quantize(g, 8), _quantize(alpha, 8)], axis=2))
        else:
            im = Image.fromarray(_quantize(g, 8))
    elif alpha is not None:
        im = Image.fromarray(np.concatenate([_quantize(rgb, 8), _quantize(alpha, 8)[..., None]], axis=2))
    else:
        im = Image.fromarray(_quantize(rgb, 8))
    kwargs: dict[str, object] = {}
    if icc_profile and fmt != "BMP":
        kwargs["icc_profile"] = icc_profile
    if exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        kwargs["exif"] = exif
    if fmt == "JPEG":
        kwargs.update(quality=int(quality), subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        kwargs.update(quality=int(quality), method=4)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_lzw")
    elif fmt == "PNG":
        kwargs.update(compress_level=6)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _encode_cv2_16(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str, grayscale: bool,
                   icc_profile: bytes | None, exif: bytes | None) -> bytes:
    if grayscale:
        g = to_gray(rgb)
        rgb = np.repeat(g[..., None], 3, axis=2)  # gray + alpha: 16-bit RGBA (OpenCV has no 16-bit LA)
    bgr = _quantize(rgb[..., ::-1], 16)
    if alpha is not None:
        bgr = np.concatenate([bgr, _quantize(alpha, 16)[..., None]], axis=2)
    ext = ".png" if fmt == "PNG" else ".tif"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
    if not ok:
        raise OutputError(f"OpenCV could not encode a 16-bit {fmt}")
    data = buf.tobytes()
    if fmt == "PNG":
        data = _png_add_chunks(data, icc_profile, exif)
    return data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_add_chunks(data: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP / eXIf chunks right after IHDR (OpenCV writes neither)."""
    if not (icc_profile or exif) or data[12:16] != b"IHDR":
        return data
    ihdr_end = 8 + 4 + 4 + 13 + 4
    extra = b""
    if icc_profile:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        raw = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        extra += _png_chunk(b"eXIf", raw)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, *, bit_depth: int = 8,
                grayscale: bool = False, icc_profile: bytes | None = None, exif: bytes | None = None,
                quality: int = 95) -> Path:
    """Encode by the extension of `path` and write atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    fmt = output_format(path)
    data = encode_image(rgb, alpha, fmt, bit_depth=bit_depth, grayscale=grayscale, icc_profile=icc_profile,
                        exif=exif, quality=quality)
    with atomic_write_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return path


# ---- the whole job for one image -------------------------------------------------------------------------------
@dataclass
class ImageOptions:
    outscale: float | None = None  # final size / input size; None = the model's scale
    jpeg_quality: int = 95  # JPEG and WebP quality
    max_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        if self.outscale is not None and not 0 < self.outscale <= 64:
            raise ConfigError("--outscale must be in (0, 64]")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("--jpeg-quality must be in 1..100")
        if self.max_pixels < 1:
            raise ConfigError("--max-pixels must be >= 1")


@dataclass
class ImageResult:
    src: Path
    dst: Path
    in_size: tuple[int, int]  # (width, height)
    out_size: tuple[int, int]
    seconds: float


def resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Plain resize (area when shrinking, bicubic when enlarging), clipped to [0, 1]."""
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    shrink = width < arr.shape[1] and height < arr.shape[0]
    out = cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0, out=out)


def upscale_image(src: str | Path, dst: str | Path, upscaler, options: ImageOptions | None = None,
                  progress: Callable[[int, int], None] | None = None) -> ImageResult:
    """Read `src`, upscale it, write `dst` (format by its extension) atomically. Never overwrites `src`."""
    src, dst = Path(src), Path(dst)
    options = options or ImageOptions()
    options.validate()
    t0 = time.perf_counter()
    check_output_file(dst, src)
    img = read_image(src, max_pixels=options.max_pixels)
    output_format(dst)  # unknown extension -> OutputError before the model runs
    h, w = img.height, img.width
    scale = int(upscaler.scale)
    if options.outscale is None:
        out_w, out_h = w * scale, h * scale
    else:
        out_w, out_h = max(1, round(w * options.outscale)), max(1, round(h * options.outscale))
    # Fail early (before the model runs) when the output folder cannot be written.
    with atomic_write_path(dst) as tmp:
        out = upscaler.upscale(img.rgb, progress=progress)
        out = resize(out, out_w, out_h)
        alpha = None if img.alpha is None else resize(img.alpha, out_w, out_h)
        fmt = output_format(dst)
        data = encode_image(out, alpha, fmt, bit_depth=img.bit_depth, grayscale=img.grayscale,
                            icc_profile=img.icc_profile, exif=img.exif, quality=options.jpeg_quality)
        del out
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
    return ImageResult(src, dst, (w, h), (out_w, out_h), time.perf_counter() - t0)
