"""Pairing LQ/GT/SR image files by stem, aligning SR to GT, quantising and writing outputs for evaluation.

Images are read with the pipeline's one reader (`image_read.read_samples`), so eval scores what `upscale` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.base.errors import InputError
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS, to_float01


def list_images(folder: Path) -> dict[str, Path]:
    """`stem -> path` for the image files directly in `folder`; a stem present twice is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in out:
            raise InputError(f"{folder}: two images share the stem {path.stem!r} ({out[path.stem].name}, {path.name})")
        out[path.stem] = path
    return out


def write_rgb(path: Path, img: np.ndarray) -> None:
    """Write an RGB uint8/uint16 image (format from the suffix). The caller handles atomicity."""
    ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"{path}: cannot encode image")
    buf.tofile(str(path))


def quantize_u8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding, as an output file would hold it."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def as_u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    return quantize_u8(to_float01(img))


def align_to_gt(sr: np.ndarray, gt: np.ndarray, scale: int, where: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Crop SR and GT to their common top-left area when they differ by less than `scale` pixels per side.

    Returns `(sr, gt, cropped)`. A larger difference is an `InputError` naming `where` (the file).
    """
    (sh, sw), (gh, gw) = sr.shape[:2], gt.shape[:2]
    if (sh, sw) == (gh, gw):
        return sr, gt, False
    if abs(sh - gh) < scale and abs(sw - gw) < scale:
        h, w = min(sh, gh), min(sw, gw)
        return sr[:h, :w], gt[:h, :w], True
    raise InputError(
        f"{where}: size {sw}x{sh} does not match the ground truth {gw}x{gh} "
        f"(differences of {scale} px or more are not cropped; is the scale x{scale}?)"
    )


@dataclass
class Pairing:
    """Which stems are evaluated and which were left out, and why."""

    stems: list[str]
    lq: dict[str, Path]
    gt: dict[str, Path] = field(default_factory=dict)
    lq_without_gt: list[str] = field(default_factory=list)
    gt_without_lq: list[str] = field(default_factory=list)
    limited_out: int = 0


def pair_folders(lq_dir: Path, gt_dir: Path | None, limit: int | None = None) -> Pairing:
    lq = list_images(lq_dir)
    if not lq:
        raise InputError(f"{lq_dir}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    gt = list_images(gt_dir) if gt_dir is not None else {}
    if gt_dir is not None:
        stems = sorted(set(lq) & set(gt))
        pairing = Pairing(
            stems=stems,
            lq=lq,
            gt=gt,
            lq_without_gt=sorted(set(lq) - set(gt)),
            gt_without_lq=sorted(set(gt) - set(lq)),
        )
        if not stems:
            raise InputError(f"no image stem is in both {lq_dir} and {gt_dir}")
    else:
        pairing = Pairing(stems=sorted(lq), lq=lq)
    if limit is not None and limit >= 0 and len(pairing.stems) > limit:
        pairing.limited_out = len(pairing.stems) - limit
        pairing.stems = pairing.stems[:limit]
    return pairing
