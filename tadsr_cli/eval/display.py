"""Display crops for `report.html`: the same region of every version of an image (LQ, each method, GT).

Crops are kept *encoded* (PNG, or JPEG when PNG would be much larger), never as full outputs, so an eval run holds
at most `images x (methods + 2)` small files in memory whatever the image sizes: a 384 px crop is about 30-150 kB.
The LQ crop stays at LQ resolution; the page shows it nearest-upscaled to the region's size.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from tadsr_cli.base.errors import OutputError

DEFAULT_CROP = 384  # HR pixels per side: enough to judge texture, small enough for a single-file report
PNG_ALLOWANCE = 1.25  # keep lossless PNG unless it is this much larger than the JPEG


@dataclass(frozen=True)
class EncodedImage:
    mime: str
    data: bytes
    width: int
    height: int

    def data_uri(self) -> str:
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")


def encode_display(rgb: np.ndarray) -> EncodedImage:
    """RGB uint8 -> PNG bytes, or JPEG (quality 95, no chroma subsampling) when PNG is over 25% larger."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    ok_png, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    ok_jpg, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95,
                                             cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not (ok_png or ok_jpg):
        raise OutputError("cannot encode a report image")
    h, w = rgb.shape[:2]
    if ok_png and (not ok_jpg or png.size <= PNG_ALLOWANCE * jpg.size):
        return EncodedImage("image/png", png.tobytes(), w, h)
    return EncodedImage("image/jpeg", jpg.tobytes(), w, h)


def _u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    return (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def choose_region(lq: np.ndarray, scale: int, crop: int = DEFAULT_CROP) -> tuple[int, int, int, int]:
    """An HR region (y, x, h, w), at most `crop` px a side and aligned to the LQ grid, over the most detailed part
    of the image (largest mean gradient energy of the LQ)."""
    h, w = lq.shape[:2]
    ch, cw = max(1, min(crop // scale, h)), max(1, min(crop // scale, w))
    y = cv2.cvtColor(_u8(lq), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1)
    # integral image: the energy of every window whose top-left corner lies in [0, h-ch] x [0, w-cw]
    s = cv2.integral(gx * gx + gy * gy)
    win = s[ch:, cw:] - s[:-ch, cw:] - s[ch:, :-cw] + s[:-ch, :-cw]
    iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)
    return int(iy) * scale, int(ix) * scale, ch * scale, cw * scale


def crop_region(img: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """`img[region]` as uint8, padded with black where the image is smaller (e.g. an output cropped to its GT)."""
    y, x, h, w = region
    out = np.zeros((h, w, 3), dtype=np.uint8)
    part = _u8(img[y:y + h, x:x + w])
    out[: part.shape[0], : part.shape[1]] = part[..., :3]
    return out


@dataclass
class DisplaySet:
    """One image (or video frame) as the report's comparison shows it: the same region of every version."""

    name: str
    region: tuple[int, int, int, int]  # y, x, h, w in HR pixels
    scale: int
    lq: EncodedImage  # at LQ resolution
    gt: EncodedImage | None = None
    methods: dict[str, EncodedImage] = field(default_factory=dict)  # in the order the methods ran
    links: dict[str, str] = field(default_factory=dict)  # method -> full-size file, relative to the report
    full_size: tuple[int, int] | None = None  # the whole HR image (h, w), for the caption

    def add(self, method: str, hr: np.ndarray, link: str | None = None) -> None:
        self.methods[method] = encode_display(crop_region(hr, self.region))
        if link:
            self.links[method] = link


def display_set(name: str, lq: np.ndarray, scale: int, gt: np.ndarray | None = None, crop: int = DEFAULT_CROP,
                region: tuple[int, int, int, int] | None = None) -> DisplaySet:
    """Start a display set from the LQ image (and GT); methods are added with `DisplaySet.add`."""
    region = region or choose_region(lq, scale, crop)
    y, x, h, w = region
    lq_crop = _u8(lq[y // scale:(y + h) // scale, x // scale:(x + w) // scale])
    return DisplaySet(name=name, region=region, scale=scale, lq=encode_display(np.ascontiguousarray(lq_crop)),
                      gt=encode_display(crop_region(gt, region)) if gt is not None else None,
                      full_size=(lq.shape[0] * scale, lq.shape[1] * scale))


class FramePicker:
    """Keeps display sets for a few frames of a video, each with the frame after it (to see flicker): frames
    spread over `total` (first, middle, near the end), or 0, 24, 96 when the length is unknown.

    Feed every frame to `offer` while measuring; only the picked ones are cropped and encoded. The region is
    chosen on the first picked frame and kept, so the frames can be compared with each other."""

    def __init__(self, total: int | None, picks: int = 3, scale: int = 4, crop: int = DEFAULT_CROP) -> None:
        if total is not None and total >= 2:
            last = total - 2  # each pick needs the frame after it
            self.picks = sorted({round(i * last / max(1, picks - 1)) for i in range(picks)})
        else:
            self.picks = [0, 24, 96][:picks]
        self.scale = scale
        self.crop = crop
        self.region: tuple[int, int, int, int] | None = None
        self.sets: list[DisplaySet] = []
        self._open: DisplaySet | None = None  # the pick waiting for its next frame

    def offer(self, index: int, lq: np.ndarray, outputs: Mapping[str, np.ndarray],
              gt: np.ndarray | None = None) -> None:
        """Frame `index`: LQ (uint8 or float [0, 1]), every method's output, and the GT frame when there is one."""
        if self._open is not None:  # the frame after a pick
            for name, out in outputs.items():
                self._open.add(f"{name} · frame {index}", out)
            self._open = None
        if index not in self.picks:
            return
        if self.region is None:
            self.region = choose_region(lq, self.scale, self.crop)
        ds = display_set(f"frame {index}", lq, self.scale, gt, region=self.region)
        for name, out in outputs.items():
            ds.add(f"{name} · frame {index}", out)
        self.sets.append(ds)
        self._open = ds
