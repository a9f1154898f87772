"""Build the held-out evaluation sets of the embedded models from the 20 whole photos never trained on.

The photos are `TRAIN_HR_HOLDOUT` (4 of ../shared/data/train-hr) and `TRAIN_HR_EXTRA_HOLDOUT` (16 of
../shared/data/train-hr-extra), listed in tadsr_cli/train/datasets.py and excluded by every recipe. Each gives one
GT: the centred crop of up to 512x512 at the photo's native resolution (as in training), sides multiples of 64.
Two LQ versions (x1/4): Real-ESRGAN second-order degradation (fixed seed per photo, the training degradation) and
plain bicubic. Output: OUT/{gt,lq_realesrgan,lq_bicubic}/*.png. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.pipeline.image_read import read_samples
from tadsr_cli.train.data_files import TRAIN_HR_EXTRA_HOLDOUT, TRAIN_HR_HOLDOUT
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.degradations import degrade

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="the folder holding train-hr/ and train-hr-extra/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "heldout")
    parser.add_argument("--size", type=int, default=512, help="largest GT side (native resolution crop)")
    args = parser.parse_args()
    real = DegradationConfig.from_dict({"kind": "realesrgan"})
    bicubic = DegradationConfig.from_dict({"kind": "bicubic"})
    names = []
    for photo in heldout_photos(args.data):
        img = read_samples(photo)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
        gt = centre_crop(img, args.size)
        stem = photo.stem
        seed = zlib.crc32(stem.encode())
        save(args.out / "gt" / f"{stem}.png", gt)
        save(args.out / "lq_realesrgan" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), real))
        save(args.out / "lq_bicubic" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), bicubic))
        names.append(stem)
    print(json.dumps({"out": str(args.out), "images": len(names), "names": names}))


if __name__ == "__main__":
    main()
