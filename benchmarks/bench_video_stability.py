"""Temporal stability of an upscaler on a camera pan over a real held-out photo (prints JSON).

There is no real video in ../shared, so a "real video" is a slow camera move (sub-pixel pan and zoom) over a held-out
whole photo (three by default), rendered at full resolution, downscaled x4 (area) and upscaled back. The model runs
as `tadsr upscale video.mp4` runs it by default: one noise field per seed at the video temperature, colour fix and
motion-compensated temporal smoothing (`--noise-scale` / `--temporal-smoothing` override those). The figures come
from `tadsr_cli.eval.temporal` (the same code as `tadsr eval --lq clip.mp4 --gt clip_hr.mp4`), per method:

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

from tadsr_cli.eval.temporal import measure_temporal, video_method
from tadsr_cli.pipeline.image_read import read_samples
from tadsr_cli.pipeline.session import Session
from tadsr_cli.pipeline.settings import VIDEO_TEMPORAL_SMOOTHING, ModelSettings, RunSettings
from tadsr_cli.pipeline.upscaler import TileOptions

ROOT = Path(__file__).resolve().parents[1]
# Three held-out photos: dense texture, fine natural texture (sand), a smooth landscape.
DEFAULT_PHOTOS = [ROOT.parent / "shared" / "data" / "train-hr-extra" / name for name in
                  ("krank__level-23.jpg", "lifeograph__sands.jpg", "endless-sky-high-dpi__valley10-sfiera@2x.jpg")]


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


def measure_clip(path: Path, args: argparse.Namespace) -> dict:
    """Summary of every method on the camera pan over one photo (fresh methods: the smoothing keeps state)."""
    photo = read_samples(path)
    photo = photo if photo.dtype == np.uint8 else (photo / 257).astype(np.uint8)
    gt = camera_frames(photo, args.frames, args.size)
    lq = [cv2.resize(f, (args.size // 4, args.size // 4), interpolation=cv2.INTER_AREA) for f in gt]
    smoothing = VIDEO_TEMPORAL_SMOOTHING if args.temporal_smoothing is None else args.temporal_smoothing
    methods = dict(video_method(Session(RunSettings(  # torch fp32: the engine the README's figures were measured on
        model=ModelSettings(model=name, backend="torch", device="cpu", precision="fp32", seed=args.seed,
                            noise_scale=args.noise_scale),
        tiles=TileOptions(tile=0), temporal_smoothing=smoothing).validate())) for name in args.model or ["default"])
    return measure_temporal(lq, methods, gt_frames=gt).summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, action="append", default=None,
                        help="photo to pan over (repeatable; default: three held-out photos)")
    parser.add_argument("--model", action="append", default=None,
                        help="model name or file (default: the embedded video default, as `tadsr upscale clip.mp4`)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="original frame side (multiple of 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-scale", type=float, default=None, help="default: the video default")
    parser.add_argument("--temporal-smoothing", type=float, default=None, help="default: the video default")
    args = parser.parse_args()

    clips = {path.name: measure_clip(path, args) for path in args.photo or DEFAULT_PHOTOS}
    # The bar of issue 11: no more flicker than the original footage, PSNR-Y >= bicubic's - 1.5 dB.
    checks = {name: {method: {"flicker_at_most_original": row["warp_error"] <= summary["reference"]["warp_error"],
                              "psnr_y_vs_bicubic": round(row["psnr_y"] - summary["bicubic"]["psnr_y"], 3)}
                     for method, row in summary.items() if method not in ("reference", "bicubic")}
              for name, summary in clips.items()}
    print(json.dumps({"frames": args.frames, "size": args.size, "seed": args.seed, "noise_scale": args.noise_scale,
                      "temporal_smoothing": args.temporal_smoothing, "clips": clips, "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
