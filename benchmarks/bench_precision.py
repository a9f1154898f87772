"""bf16 against fp32 for the shipped model on this machine's CPU: speed and distance of the outputs (prints JSON).

Runs the whole `Upscaler` (default tiles, one global noise field) on held-out LQ photos with the torch engine in
fp32 and in bf16, best of `--repeats` per image, and reports the time ratio (wall clock, and process CPU time,
which a busy machine inflates less) and the PSNR of the bf16 output against the fp32 output (the rule for
`--precision auto`: bf16 when it is faster and >= 40 dB from fp32).

    python benchmarks/bench_precision.py [--lq runs/heldout/lq_realesrgan] [--images 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tadsr_cli.engines import create_engine
from tadsr_cli.models.model_cache import resolve_model
from tadsr_cli.pipeline.image_read import read_image
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def best_time(upscaler: Upscaler, rgb: np.ndarray, repeats: int) -> tuple[float, float, np.ndarray]:
    """Best wall and best process CPU seconds of `repeats` runs, and the output."""
    out = upscaler.upscale(rgb)  # warm-up (the bf16 fast path builds its copy here)
    best = best_cpu = math.inf
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = upscaler.upscale(rgb)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu_start)
    return best, best_cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lq", type=Path, default=Path("runs/heldout/lq_realesrgan"))
    parser.add_argument("--model", default=None, help="model name or file (default: the embedded default)")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted(p for p in args.lq.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.images]
    if not files:
        raise SystemExit(f"no LQ images in {args.lq} (run benchmarks/make_heldout_sets.py first)")
    model = resolve_model(args.model)
    upscalers = {p: Upscaler(create_engine("torch", model, device="cpu", precision=p), TileOptions(), seed=0)
                 for p in ("fp32", "bf16")}
    rows = []
    for path in files:
        rgb = read_image(path).rgb
        t32, c32, out32 = best_time(upscalers["fp32"], rgb, args.repeats)
        t16, c16, out16 = best_time(upscalers["bf16"], rgb, args.repeats)
        rows.append({"image": path.name, "lq_size": [rgb.shape[1], rgb.shape[0]], "fp32_s": round(t32, 4),
                     "bf16_s": round(t16, 4), "fp32_cpu_s": round(c32, 4), "bf16_cpu_s": round(c16, 4),
                     "bf16_vs_fp32_psnr_db": round(psnr(out16, out32), 2)})
    fp32_total = sum(r["fp32_s"] for r in rows)
    bf16_total = sum(r["bf16_s"] for r in rows)
    fp32_cpu_total = sum(r["fp32_cpu_s"] for r in rows)
    bf16_cpu_total = sum(r["bf16_cpu_s"] for r in rows)
    min_psnr = min(r["bf16_vs_fp32_psnr_db"] for r in rows)
    result = {
        "model": str(args.model or "default"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "images": rows,
        "fp32_total_s": round(fp32_total, 3),
        "bf16_total_s": round(bf16_total, 3),
        "bf16_speedup": round(fp32_total / bf16_total, 3),
        "fp32_cpu_total_s": round(fp32_cpu_total, 3),
        "bf16_cpu_total_s": round(bf16_cpu_total, 3),
        "bf16_speedup_cpu": round(fp32_cpu_total / bf16_cpu_total, 3),
        "bf16_vs_fp32_min_psnr_db": min_psnr,
        "auto_would_choose_bf16": bool(bf16_total < fp32_total and min_psnr >= 40.0),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
