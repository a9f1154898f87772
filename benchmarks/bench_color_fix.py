"""Colour fidelity of `--color-fix none|wavelet|adain` on the held-out photos (prints JSON).

The model runs once per photo (default settings); each fix is applied to that same output, and the result is
compared with the ground truth in colour: PSNR of the BT.601 chroma (Cb, Cr) and of Y, and the largest error of a
channel's mean (a colour cast), each averaged over the photos, and the time of each fix (`seconds`, wall clock, and
`cpu_seconds`, process CPU time, which a busy machine inflates less). `tadsr eval --color-fix X` gives the usual table.

    python benchmarks/bench_color_fix.py [--lq runs/heldout/lq_realesrgan] [--gt runs/heldout/gt] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from tadsr_cli.models.model_cache import resolve_model_path
from tadsr_cli.pipeline.color_fix import COLOR_FIXES, color_fix
from tadsr_cli.pipeline.image_read import read_image
from tadsr_cli.pipeline.session import build_upscaler
from tadsr_cli.pipeline.settings import ModelSettings
from tadsr_cli.pipeline.upscaler import TileOptions


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range YCbCr of float RGB in [0, 1] (OpenCV orders it Y, Cr, Cb)."""
    return cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2YCrCb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lq", type=Path, default=Path("runs/heldout/lq_realesrgan"))
    parser.add_argument("--gt", type=Path, default=Path("runs/heldout/gt"))
    parser.add_argument("--model", default=None, help="model name or file (default: the embedded default)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model)
    upscaler = build_upscaler(ModelSettings(model=args.model, device="cpu"), TileOptions(), path, steps=1)
    sums = {fix: {"psnr_y": 0.0, "psnr_cbcr": 0.0, "cast": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
            for fix in COLOR_FIXES}
    files = sorted(p for p in args.lq.iterdir() if p.suffix.lower() == ".png")
    for lq_path in files:
        lq = read_image(lq_path).rgb
        gt = read_image(args.gt / lq_path.name).rgb
        out = upscaler.upscale(lq)
        h, w = min(out.shape[0], gt.shape[0]), min(out.shape[1], gt.shape[1])
        gt_c = ycbcr(gt[:h, :w])
        for fix in COLOR_FIXES:
            start, cpu_start = time.perf_counter(), time.process_time()
            fixed = color_fix(out.copy(), lq, fix)
            sums[fix]["seconds"] += time.perf_counter() - start
            sums[fix]["cpu_seconds"] += time.process_time() - cpu_start
            q = np.round(fixed[:h, :w] * 255) / 255  # as saved
            c = ycbcr(q)
            sums[fix]["psnr_y"] += psnr(c[..., 0], gt_c[..., 0])
            sums[fix]["psnr_cbcr"] += psnr(c[..., 1:], gt_c[..., 1:])
            sums[fix]["cast"] += float(np.abs(q.mean(axis=(0, 1)) - gt[:h, :w].mean(axis=(0, 1))).max())
    n = len(files)
    result = {
        "model": str(path.name), "images": n, "backend": getattr(upscaler.engine, "name", None),
        "precision": getattr(upscaler.engine, "precision", None),
        "threads": torch.get_num_threads(),
        "fixes": {fix: {key: round(v / n, 5 if key == "cast" else 3) for key, v in s.items()}
                  for fix, s in sums.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
