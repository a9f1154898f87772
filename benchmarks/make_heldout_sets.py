"""Build the held-out evaluation sets for the embedded model from the 4 photos never trained on.

Each held-out photo of ../shared/data/train-hr gives 4 fixed 256x256 GT crops (corners of a centred 2x2 grid, at the
photo's native resolution, as in training). Two LQ versions, 64x64: Real-ESRGAN second-order degradation (fixed seed
per crop) and plain bicubic x1/4. Output: OUT/{gt,lq_realesrgan,lq_bicubic}/*.png. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.train.datasets import TRAIN_HR_HOLDOUT, read_image
from tadsr_cli.train.degradations import DegradationConfig, degrade

ROOT = Path(__file__).resolve().parents[1]


def crops(img: np.ndarray, size: int = 256) -> list[tuple[str, np.ndarray]]:
    h, w = img.shape[:2]
    cy, cx = h // 2, w // 2
    out = []
    for dy, dx, tag in ((-1, -1, "a"), (-1, 0, "b"), (0, -1, "c"), (0, 0, "d")):
        y, x = cy + dy * size, cx + dx * size
        out.append((tag, img[y:y + size, x:x + size]))
    return out


def save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hr", type=Path, default=ROOT.parent / "shared" / "data" / "train-hr")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "heldout")
    args = parser.parse_args()
    real = DegradationConfig.from_dict({"kind": "realesrgan"})
    bicubic = DegradationConfig.from_dict({"kind": "bicubic"})
    names = []
    for photo in TRAIN_HR_HOLDOUT:
        img = read_image(args.hr / photo)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
        for tag, gt in crops(img):
            stem = f"{Path(photo).stem}_{tag}"
            seed = zlib.crc32(stem.encode())
            save(args.out / "gt" / f"{stem}.png", gt)
            save(args.out / "lq_realesrgan" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), real))
            save(args.out / "lq_bicubic" / f"{stem}.png", degrade(gt, np.random.default_rng(seed), bicubic))
            names.append(stem)
    print(json.dumps({"out": str(args.out), "images": len(names), "names": names}))


if __name__ == "__main__":
    main()
