"""Temporal stability of an upscaler on a camera pan over a real held-out photo (prints JSON).

There is no real video in ../shared, so the "real video" is a slow camera move (sub-pixel pan and zoom) over one of the
held-out whole photos, rendered at full resolution, downscaled x4 (area) and upscaled back with default settings (the
same `Upscaler`, one noise field per seed, as `tadsr upscale video.mp4`). Reported per method:

* `psnr_y`: mean per-frame PSNR-Y against the original frames (border of 4 px cropped);
* `warp_error`: flicker, the mean absolute difference (0-255, RGB) between output frame t+1 and output frame t warped
  to t+1 by optical flow (OpenCV DIS) computed on the ORIGINAL frames, 8 px border excluded; the original frames'
  own figure is the floor set by the motion (interpolation, disocclusion).

    python benchmarks/bench_video_stability.py [--model default] [--model FILE ...] [--frames 24] [--size 256]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

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


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb01 * 255.0), 0, 255).astype(np.uint8)


def to_y(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    ya, yb = to_y(a)[border:-border, border:-border], to_y(b)[border:-border, border:-border]
    mse = float(np.mean((ya - yb) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def flows(frames: list[np.ndarray]) -> list[np.ndarray]:
    """flow[t]: for each pixel of frame t+1, where it was in frame t (DIS on the original frames)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return [dis.calc(gray[t + 1], gray[t], None) for t in range(len(frames) - 1)]


def warp_error(frames: list[np.ndarray], flow: list[np.ndarray], border: int = 8) -> float:
    h, w = frames[0].shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    errs = []
    for t, f in enumerate(flow):
        if f.shape[:2] != (h, w):  # flow of the original frames, applied to outputs of the same size
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / f.shape[1])
        warped = cv2.remap(frames[t], gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR)
        diff = np.abs(frames[t + 1].astype(np.float32) - warped.astype(np.float32))
        errs.append(float(diff[border:-border, border:-border].mean()))
    return float(np.mean(errs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--model", action="append", default=None, help="model name or file (default: the embedded)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="original frame side (multiple of 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from tadsr_cli.engines import create_engine
    from tadsr_cli.models.registry import resolve_model
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    photo = read_samples(args.photo)
    photo = photo if photo.dtype == np.uint8 else (photo / 257).astype(np.uint8)
    gt = camera_frames(photo, args.frames, args.size)
    lq = [cv2.resize(f, (args.size // 4, args.size // 4), interpolation=cv2.INTER_AREA) for f in gt]
    flow = flows(gt)
    outputs: dict[str, list[np.ndarray]] = {
        "bicubic": [cv2.resize(f, (args.size, args.size), interpolation=cv2.INTER_CUBIC) for f in lq]
    }
    for name in args.model or ["default"]:
        model = resolve_model(None if name == "default" else name, device="cpu")
        engine = create_engine("torch", model, device="cpu", precision="fp32", steps=1, seed=args.seed)
        up = Upscaler(engine, TileOptions(), seed=args.seed)
        outputs[name] = [to_uint8(up.upscale(f.astype(np.float32) / 255.0)) for f in lq]
    report = {
        "photo": args.photo.name, "frames": args.frames, "size": args.size, "seed": args.seed,
        "original": {"warp_error": warp_error(gt, flow)},
    }
    for name, frames in outputs.items():
        report[name] = {
            "psnr_y": float(np.mean([psnr_y(o, g) for o, g in zip(frames, gt, strict=True)])),
            "warp_error": warp_error(frames, flow),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
