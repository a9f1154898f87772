"""Temporal stability of an upscaler on a camera pan over a real held-out photo (prints JSON).

There is no real video in ../shared, so the "real video" is a slow camera move (sub-pixel pan and zoom) over one of the
held-out whole photos, rendered at full resolution, downscaled x4 (area) and upscaled back with default settings (the
same `Upscaler`, one noise field per seed, as `tadsr upscale video.mp4`). The figures come from the library
`tadsr_cli.eval.temporal` (the same code as `tadsr eval --lq clip.mp4 --gt clip_hr.mp4`), per method:

The model runs as `tadsr upscale video.mp4` runs it by default: video noise temperature, colour fix and
motion-compensated temporal smoothing (`--noise-scale` / `--temporal-smoothing` override the last two).

* `psnr_y`: mean per-frame PSNR-Y against the original frames (border of 4 px cropped);
* `warp_error`: flicker, the mean absolute difference (0-255, RGB) between output frame t+1 and output frame t warped
  to t+1 by optical flow (OpenCV DIS) computed on the ORIGINAL frames, occluded pixels and an 8 px border excluded;
  the original frames' own figure (`reference`) is the floor set by the motion (interpolation).

    python benchmarks/bench_video_stability.py [--model default] [--model FILE ...] [--frames 24] [--size 256]
        [--photo FILE] [--noise-scale S] [--temporal-smoothing A]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from tadsr_cli.eval.temporal import ModelSettings, measure_temporal, model_method
from tadsr_cli.pipeline.image_read import read_samples

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = ROOT.parent / "shared" / "data" / "train-hr-extra" / "krank__level-23.jpg"


def camera_frames(photo: np.ndarray, n: int, size: int, step: float = 1.3, zoom: float = 0.002) -> list[np.ndarray]:
    """n frames of size x size: the view moves `step` px/frame right and 0.4 * step down and zooms in slowly."""
    h, w = photo.shape[:2]
    cy, cx = h / 2 - 0.2 * n * step, w / 2 - 0.5 * n * step
    frames = []
    for i in range(n):
        s = 1.0 + zoom * i
        x0, y0 = cx + i * step, cy + 0.4 * i * step
        # maps output (u, v) to photo (x0 + (u - size/2) / s, y0 + (v - size/2) / s)
        m = np.array([[1 / s, 0, x0 - size / 2 / s], [0, 1 / s, y0 - size / 2 / s]], dtype=np.float64)
        frames.append(cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--model", action="append", default=None, help="model name or file (default: the embedded)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="original frame side (multiple of 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-scale", type=float, default=None, help="default: the video default")
    parser.add_argument("--temporal-smoothing", type=float, default=None, help="default: the video default")
    args = parser.parse_args()

    photo = read_samples(args.photo)
    photo = photo if photo.dtype == np.uint8 else (photo / 257).astype(np.uint8)
    gt = camera_frames(photo, args.frames, args.size)
    lq = [cv2.resize(f, (args.size // 4, args.size // 4), interpolation=cv2.INTER_AREA) for f in gt]
    settings = ModelSettings(device="cpu", seed=args.seed, tile=0, noise_scale=args.noise_scale,
                             temporal_smoothing=args.temporal_smoothing)
    methods = dict(model_method(None if name == "default" else name, settings) for name in args.model or ["default"])
    report = measure_temporal(lq, methods, gt_frames=gt)
    print(json.dumps({"photo": args.photo.name, "frames": args.frames, "size": args.size, "seed": args.seed,
                      "noise_scale": args.noise_scale, "temporal_smoothing": args.temporal_smoothing,
                      "summary": report.summary()}, indent=2))


if __name__ == "__main__":
    main()
