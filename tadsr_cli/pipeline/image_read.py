"""The project's one image reader: a still image file -> float RGB in [0, 1] (+ alpha), for upscaling, eval and training.

The header is read first (Pillow, lazy) so that images above `max_pixels` are refused before they are decoded;
decoding is by content (a mislabelled extension still decodes, with a log warning); EXIF orientation is applied;
16-bit PNG/TIFF are decoded with OpenCV at full depth (Pillow reads 16-bit RGB as 8-bit); grey is replicated to
three channels and alpha is returned apart; the ICC profile and the remaining EXIF (orientation reset) are kept for
the output. Damaged, truncated, empty and non-image files raise one-line `InputError`s.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from tadsr_cli.base.errors import InputError
from tadsr_cli.pipeline.image_integrity import check_integrity
from tadsr_cli.pipeline.paths import check_input_file, reason

log = logging.getLogger(__name__)

# Input and output extensions -> Pillow format names.
EXT_TO_FORMAT: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
IMAGE_EXTENSIONS = frozenset(EXT_TO_FORMAT)
# Read but never written: an (animated) GIF is upscaled as its first frame, into a PNG by default.
INPUT_EXTENSIONS = IMAGE_EXTENSIONS | {".gif"}
# Pillow formats accepted on input (MPO = multi-picture JPEG from cameras; first picture used).
INPUT_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "TIFF": "TIFF", "BMP": "BMP",
                 "GIF": "GIF"}
_KNOWN = "PNG, JPEG, WebP, TIFF, BMP or GIF"

# Input pixel limit. The host-side float32 output accumulator needs ~200 bytes per *input* pixel at x4, so the
# default (16.8 MP, e.g. 4096 x 4096) means ~3.2 GB of RAM; `--max-pixels` raises or lowers it.
DEFAULT_MAX_PIXELS = 4096 * 4096
EXIF_ORIENTATION = 0x0112
# Tags that describe the pixel layout (TIFF structure): never carried to the output (a TIFF's "EXIF" is its IFD0).
_STRUCTURAL_TAGS = frozenset({
    0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x010A, 0x0111, 0x0112, 0x0115, 0x0116, 0x0117, 0x0118, 0x0119,
    0x011A, 0x011B, 0x011C, 0x0128, 0x013D, 0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x0152, 0x0153, 0x0154,
    0x0155, 0x0201, 0x0202, 0x0211, 0x0212, 0x0213, 0x0214, 0x8773,
})


@dataclass
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 float32 in [0, 1] (grayscale replicated), orientation applied
    alpha: np.ndarray | None  # H x W float32 in [0, 1]
    bit_depth: int  # 8 or 16
    grayscale: bool
    format: str  # Pillow format of the content ("PNG", "JPEG", ...)
    icc_profile: bytes | None = None
    exif: bytes | None = None  # EXIF with the orientation tag removed

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def samples(self) -> np.ndarray:
        """The colour samples at the file's depth: H x W x 3 uint8, or uint16 for a 16-bit source (exact)."""
        peak = 65535.0 if self.bit_depth == 16 else 255.0
        out = np.rint(self.rgb * np.float32(peak))
        return out.astype(np.uint16 if self.bit_depth == 16 else np.uint8)


@contextlib.contextmanager
def _pillow_limit() -> Iterator[None]:
    """Let our own `max_pixels` check decide (Pillow's bomb check would otherwise warn/refuse on its own)."""
    old = Image.MAX_IMAGE_PIXELS
    old_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = None  # `read_image` checks the header's size itself, before anything is decoded
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # strict, whatever another module set process-wide
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old
        ImageFile.LOAD_TRUNCATED_IMAGES = old_truncated


def _png_ihdr(head: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG header, or None."""
    if len(head) >= 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def _is_16bit(im: Image.Image, head: bytes) -> bool:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return True
    if im.format == "PNG":
        ihdr = _png_ihdr(head)
        return bool(ihdr and ihdr[0] == 16)
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if isinstance(bits, tuple):
            bits = bits[0] if bits else 8
        return bool(bits and int(bits) > 8)
    return False


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H x W (x C) array, like `PIL.ImageOps.exif_transpose`."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _open_header(path: Path, max_pixels: int | None, folder_hint: str = "") -> tuple[Image.Image, str, bytes]:
    """The header check, before anything is decoded: a plain readable file, a recognised and supported format, at
    most `max_pixels`, at least one pixel; else a one-line `InputError`. Returns the lazily opened image (the
    caller closes it), its input format and the file's first 64 bytes."""
    check_input_file(path, folder_hint)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({reason(exc)})") from None

    with _pillow_limit():
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            raise InputError(f"{path}: not a recognised image ({_KNOWN})") from None
        except Image.DecompressionBombError as exc:
            raise InputError(f"{path}: image too large ({exc}); raise --max-pixels to allow it") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path}: damaged image header ({exc})") from None
    try:
        fmt = INPUT_FORMATS.get(im.format or "")
        if fmt is None:
            raise InputError(f"{path}: {im.format} images are not supported ({_KNOWN})")
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise InputError(
                f"{path}: {w}x{h} ({w * h / 1e6:.1f} MP) is above the limit of {max_pixels / 1e6:.1f} MP; "
                "raise --max-pixels to allow it"
            )
        if w < 1 or h < 1:
            raise InputError(f"{path}: image has no pixels ({w}x{h})")
    except BaseException:
        im.close()
        raise
    return im, fmt, head


def check_header(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Raise the `InputError` that `read_image` would raise for `path`'s header, without decoding the pixels (the
    training data's check of its files: the same accept/reject decisions as `tadsr upscale`)."""
    im, _, _ = _open_header(Path(path), max_pixels)
    im.close()


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image (see module doc); `max_pixels=None`: no size limit (data sets, evaluation).

    Raises `InputError` with a one-line message for anything unreadable."""
    path = Path(path)
    im, fmt, head = _open_header(path, max_pixels, " (use `tadsr batch` for folders)")
    with im:
        claimed = EXT_TO_FORMAT.get(path.suffix.lower())
        if claimed is not None and claimed != fmt:
            log.warning("%s: the content is %s, not %s as the extension says; decoding it as %s",
                        path, fmt, claimed, fmt)
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and fmt == "GIF":
            log.warning("%s: animated GIF with %d frames; only the first frame is upscaled, as a still image "
                        "(convert it to a video, e.g. MP4, to upscale every frame)", path, frames)
        elif frames > 1:
            log.warning("%s: %d frames/pages; only the first is upscaled", path, frames)
        # Decode first (strictly): reading EXIF may decode a PNG as a side effect, and a broken EXIF block is
        # tolerated below, which must never hide damaged pixel data.
        try:
            with _pillow_limit():
                im.load()
        except (OSError, SyntaxError, ValueError, struct.error, zlib.error, EOFError) as exc:
            raise InputError(f"{path}: damaged or truncated image ({exc})") from None
        check_integrity(path, fmt)
        icc = im.info.get("icc_profile") or None
        try:
            exif = im.getexif()
            orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
        except Exception:  # a broken EXIF block must not stop the image
            exif, orientation = None, 1
        sixteen = _is_16bit(im, head)
        mode = im.mode
        if mode == "CMYK":
            icc = None  # a CMYK profile does not describe the RGB we produce
        if sixteen and mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            rgb, alpha, gray = _decode_cv2_16(path, fmt, head)
        else:
            rgb, alpha, gray = _decode_pillow(im)
    if not 1 <= orientation <= 8:
        orientation = 1
    if orientation != 1:
        rgb = _orient(rgb, orientation)
        alpha = None if alpha is None else _orient(alpha, orientation)
    exif_bytes = None
    if exif is not None and len(exif):
        with contextlib.suppress(Exception):
            for tag in [t for t in exif if t in _STRUCTURAL_TAGS]:
                del exif[tag]
            exif_bytes = exif.tobytes() if len(exif) else None
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=16 if sixteen else 8, grayscale=gray, format=fmt,
                       icc_profile=icc, exif=exif_bytes)


def _decode_pillow(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float32)
        g = np.clip(arr / 65535.0, 0, 1)
        return _gray3(g), None, True
    if mode == "F":
        arr = np.asarray(im).astype(np.float32)
        if arr.max(initial=0) > 1.0:
            arr = arr / 65535.0
        return _gray3(np.clip(arr, 0, 1)), None, True
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    arr = np.asarray(im).astype(np.float32) / 255.0
    if im.mode == "L":
        return _gray3(arr), None, True
    if im.mode == "LA":
        return _gray3(arr[..., 0]), arr[..., 1].copy(), True
    if im.mode == "RGBA":
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), False
    return np.ascontiguousarray(arr), None, False


def _decode_cv2_16(path: Path, fmt: str, head: bytes) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Full-depth decode of a 16-bit colour PNG/TIFF (Pillow would reduce it to 8 bits)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"{path}: damaged or unsupported 16-bit {fmt} image")
    scale = 65535.0 if arr.dtype == np.uint16 else (255.0 if arr.dtype == np.uint8 else 1.0)
    arr = arr.astype(np.float32) / scale
    np.clip(arr, 0, 1, out=arr)
    ihdr = _png_ihdr(head)
    gray_hint = ihdr is not None and ihdr[1] in (0, 4)
    if arr.ndim == 2:
        return _gray3(arr), None, True
    ch = arr.shape[2]
    if ch == 1:
        return _gray3(arr[..., 0]), None, True
    if ch == 2:
        return _gray3(arr[..., 0]), arr[..., 1].copy(), True
    rgb = np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB
    alpha = arr[..., 3].copy() if ch == 4 else None
    return rgb, alpha, gray_hint


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g.astype(np.float32)[..., None], 3, axis=2))


def read_samples(path: str | Path) -> np.ndarray:
    """An image file's colour samples, H x W x 3 uint8 (uint16 for a 16-bit file), without a size limit: what eval
    and the training data read, decoded exactly as `tadsr upscale` decodes it (`read_image`)."""
    return read_image(path, max_pixels=None).samples()


def to_float01(img: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Image samples -> floats in [0, 1]: uint8 / uint16 divided by their peak (the reader's own conversion, so
    every user sees the same values); float input is taken as already in [0, 1]."""
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
    if peak is not None:
        return img.astype(dtype) / dtype(peak)
    if np.issubdtype(img.dtype, np.floating):
        return np.ascontiguousarray(img, dtype=dtype)
    raise InputError(f"unsupported image sample type {img.dtype}")
