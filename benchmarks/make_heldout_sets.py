"""Build the held-out evaluation sets of the embedded models from the 20 whole photos never trained on.

The photos are `TRAIN_HR_HOLDOUT` (4 of ../shared/data/train-hr) and `TRAIN_HR_EXTRA_HOLDOUT` (16 of
../shared/data/train-hr-extra), listed in tadsr_cli/train/data_files.py and excluded by every recipe.

`base` sets: each photo gives one GT: the centred crop of up to 512x512 at the photo's native resolution (as in
training), sides multiples of 64. Two LQ versions (x1/4): Real-ESRGAN second-order degradation (fixed seed per
photo, the training degradation) and plain bicubic. Output: OUT/{gt,lq_realesrgan,lq_bicubic}/*.png.

`web` set (what users upscale: small, already-compressed web photos; issue 21): each photo is downscaled
(anti-aliased: area or Lanczos, drawn per photo) to a long side drawn in [448, 560] (more where the short side would
fall under one crop), JPEG-compressed once at a quality drawn in [70, 90] (OpenCV / libjpeg, 4:2:0), and saved as
OUT/web_photos/<photo>.jpg. From that image, `--web-crops` 256x256 GT crops (non-overlapping where the image allows)
are each degraded `--web-draws` times with the Real-ESRGAN degradation (default `DegradationConfig`, as
`lq_realesrgan`): OUT/web_lq/<photo>_c<crop>_d<draw>.png, with the GT crop duplicated per draw in
OUT/web_gt/<photo>_c<crop>_d<draw>.png so that `tadsr eval --lq --gt` pairs them by stem. OUT/web.json records
every drawn parameter.

Everything is seeded by the photo name (zlib.crc32), the web set in its own random streams, so the base sets stay
bit-identical whether or not the web set is built. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tadsr_cli.pipeline.image_read import read_samples
from tadsr_cli.train.data_files import TRAIN_HR_EXTRA_HOLDOUT, TRAIN_HR_HOLDOUT
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.degradations import degrade

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# A stream tag mixed into the web set's seeds, so that its draws never coincide with the base sets' streams
# (those use `default_rng(crc32(stem))` alone).
WEB_STREAM = 0x5EED_0B0E
WEB_LONG_SIDE = (448, 560)  # inclusive: around the ~500 px of a web page's photo
WEB_JPEG_QUALITY = (70, 90)  # inclusive: what sites and editors save at
WEB_CROP = 256
WEB_CANDIDATES = 256  # random positions tried for crops beyond those that fit side by side


def centre_crop(img: np.ndarray, size: int = 512, multiple: int = 64) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h // multiple * multiple), min(size, w // multiple * multiple)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y:y + ch, x:x + cw]


def save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))


def heldout_photos(data: Path = DATA) -> list[Path]:
    return [data / "train-hr" / n for n in TRAIN_HR_HOLDOUT] + [
        data / "train-hr-extra" / n for n in TRAIN_HR_EXTRA_HOLDOUT
    ]


def build_base(photos: list[Path], out: Path, size: int) -> dict:
    """The original sets (gt, lq_realesrgan, lq_bicubic); unchanged, so their files stay bit-identical."""
    real = DegradationConfig.from_dict({"kind": "realesrgan"})
    bicubic = DegradationConfig.from_dict({"kind": "bicubic"})
    names = []
    for photo in photos:
        img = read_samples(photo)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
        gt = centre_crop(img, size)
        stem = photo.stem
        seed = zlib.crc32(stem.encode())
        save(out / "gt" / f"{stem}.png", gt)
        save(out / "lq_realesrgan" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), real))
        save(out / "lq_bicubic" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), bicubic))
        names.append(stem)
    return {"images": len(names), "names": names}


# ---- the web-image variant -----------------------------------------------------------------------------------------
def as_u8(img: np.ndarray) -> np.ndarray:
    """A web image is 8-bit: a 16-bit source is reduced first (the held-out photos are all 8-bit JPEGs)."""
    if img.dtype == np.uint8:
        return img
    return np.clip(np.rint(img.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def web_size(h: int, w: int, long_side: int, crop: int) -> tuple[int, int]:
    """(h, w) with the long side `long_side`, raised so the short side holds a crop, never above the source."""
    long_now, short_now = max(h, w), min(h, w)
    long_side = max(long_side, math.ceil(crop * long_now / short_now))
    if long_side >= long_now:  # already web-sized: a web image is never upscaled
        return h, w
    f = long_side / long_now
    return max(crop, round(h * f)), max(crop, round(w * f))


def web_downscale(img: np.ndarray, size_hw: tuple[int, int], mode: str) -> np.ndarray:
    """Anti-aliased downscale of an 8-bit RGB image: OpenCV area averaging, or PIL Lanczos (filter support scaled
    with the factor, as image editors and sites' resizers do)."""
    h, w = size_hw
    if img.shape[:2] == (h, w):
        return img
    if mode == "area":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.LANCZOS))


def jpeg_bytes(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    return buf.tobytes()


def choose_crops(rng: np.random.Generator, h: int, w: int, n: int, crop: int) -> list[tuple[int, int]]:
    """`n` top-left corners of `crop`-sized squares, disjoint where the image has room for them.

    The image is cut into the most cells that each hold a crop (`h // crop` x `w // crop`); up to `n` cells are
    drawn and a crop placed at random inside each, so those never overlap. Crops beyond the number of cells are
    the random candidate with the least overlap with those already placed (the first drawn among equals).
    """
    ny, nx = h // crop, w // crop
    cells = rng.permutation(ny * nx)[:n]
    picked: list[tuple[int, int]] = []
    for cell in cells:
        cy, cx = divmod(int(cell), nx)
        y0, y1 = cy * h // ny, (cy + 1) * h // ny  # the cell's rows; at least `crop` of them
        x0, x1 = cx * w // nx, (cx + 1) * w // nx
        picked.append((int(rng.integers(y0, y1 - crop + 1)), int(rng.integers(x0, x1 - crop + 1))))
    ys = rng.integers(0, h - crop + 1, size=WEB_CANDIDATES)
    xs = rng.integers(0, w - crop + 1, size=WEB_CANDIDATES)
    while len(picked) < n:
        worst = np.zeros(WEB_CANDIDATES, dtype=np.int64)
        for py, px in picked:
            overlap = np.clip(crop - np.abs(ys - py), 0, None) * np.clip(crop - np.abs(xs - px), 0, None)
            worst = np.maximum(worst, overlap)
        i = int(np.argmin(worst))
        picked.append((int(ys[i]), int(xs[i])))
    return picked


def web_photo(img: np.ndarray, stem: str, crops: int = 3, draws: int = 2, crop: int = WEB_CROP,
              cfg: DegradationConfig | None = None) -> tuple[bytes, list[tuple[str, np.ndarray, np.ndarray]], dict]:
    """One photo -> (its web JPEG, [(name, GT uint8, LQ float32)], drawn parameters). Deterministic in `stem`."""
    cfg = cfg or DegradationConfig.from_dict({"kind": "realesrgan"})
    seed = zlib.crc32(stem.encode())
    rng = np.random.default_rng([seed, WEB_STREAM])
    src = as_u8(img)
    long_side = int(rng.integers(WEB_LONG_SIDE[0], WEB_LONG_SIDE[1] + 1))
    mode = "area" if rng.uniform() < 0.5 else "lanczos"
    quality = int(rng.integers(WEB_JPEG_QUALITY[0], WEB_JPEG_QUALITY[1] + 1))
    h, w = web_size(*src.shape[:2], long_side, crop)
    jpg = jpeg_bytes(web_downscale(src, (h, w), mode), quality)
    web = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    boxes = choose_crops(rng, h, w, crops, crop)
    pairs = []
    for c, (y, x) in enumerate(boxes):
        gt = np.ascontiguousarray(web[y:y + crop, x:x + crop])
        gt_f = gt.astype(np.float32) / 255.0
        for d in range(draws):
            # one stream per (crop, draw): adding crops or draws later leaves the existing files as they are
            lq = degrade(gt_f, np.random.default_rng([seed, WEB_STREAM, c, d]), cfg)
            pairs.append((f"{stem}_c{c}_d{d}", gt, lq))
    info = {"source_hw": list(src.shape[:2]), "web_hw": [h, w], "long_side_drawn": long_side, "resize": mode,
            "jpeg_quality": quality, "jpeg_bytes": len(jpg), "crops_yx": [list(b) for b in boxes]}
    return jpg, pairs, info


def build_web(photos: list[Path], out: Path, crops: int, draws: int) -> dict:
    cfg = DegradationConfig.from_dict({"kind": "realesrgan"})
    per_photo = {}
    n = 0
    for photo in photos:
        jpg, pairs, info = web_photo(read_samples(photo), photo.stem, crops, draws, WEB_CROP, cfg)
        (out / "web_photos").mkdir(parents=True, exist_ok=True)
        (out / "web_photos" / f"{photo.stem}.jpg").write_bytes(jpg)
        for name, gt, lq in pairs:
            save(out / "web_gt" / f"{name}.png", gt)
            save(out / "web_lq" / f"{name}.png", lq)
        per_photo[photo.stem] = info
        n += len(pairs)
    summary = {"photos": len(per_photo), "crops_per_photo": crops, "draws_per_crop": draws,
               "crops": len(per_photo) * crops, "pairs": n, "gt_size": WEB_CROP, "lq_size": WEB_CROP // cfg.scale,
               "qualities": sorted({p["jpeg_quality"] for p in per_photo.values()})}
    (out / "web.json").write_text(json.dumps({**summary, "per_photo": per_photo}, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the folder holding train-hr/ and train-hr-extra/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "heldout")
    parser.add_argument("--size", type=int, default=512, help="largest GT side of the base sets (native crop)")
    parser.add_argument("--only", choices=("all", "base", "web"), default="all",
                        help="build only the base sets or only the web variant (into an existing OUT)")
    parser.add_argument("--web-crops", type=int, default=3, help="256x256 crops per web photo")
    parser.add_argument("--web-draws", type=int, default=2, help="degradation draws per crop")
    args = parser.parse_args()
    photos = heldout_photos(args.data)
    summary: dict = {"out": str(args.out)}
    if args.only in ("all", "base"):
        summary.update(build_base(photos, args.out, args.size))
    if args.only in ("all", "web"):
        summary["web"] = build_web(photos, args.out, args.web_crops, args.web_draws)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
