"""Benchmark of `tadsr eval` on a small paired set it generates itself (prints one JSON object; not a timed test).

* the cost of each metric on one output of the chosen size (median of `--repeat` runs);
* a whole `run_eval` over `--images` generated GT/LQ pairs with the bicubic and lanczos baselines, ready outputs
  (`--sr`, a blurred GT) and, with `--model`, the tiny random-weight test model through the real `Upscaler`.

    python benchmarks/bench_eval.py [--images 4] [--size 256] [--device auto] [--model] [--repeat 3]

Random weights and synthetic images: the numbers measure speed and the plumbing, never quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 6.0)
    base = (base - base.min()) / (np.ptp(base) + 1e-6)
    img = (base * 180 + 40).astype(np.uint8)
    for _ in range(8):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.rectangle(img, p1, p2, c, int(rng.integers(1, 4)))
        cv2.circle(img, p2, int(rng.integers(4, 24)), c, -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_set(root: Path, n: int, size: int, scale: int = 4) -> None:
    for d in ("gt", "lq", "sr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        gt = textured(size, size, seed=i)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "gt" / f"img{i:03d}.png"), gt)
        cv2.imwrite(str(root / "lq" / f"img{i:03d}.png"), lq)
        cv2.imwrite(str(root / "sr" / f"img{i:03d}.png"), cv2.GaussianBlur(gt, (0, 0), 1.2))


def time_metrics(size: int, repeat: int, device: str) -> dict[str, float | str]:
    import torch

    from tadsr_cli.eval.niqe import load_pristine, niqe
    from tadsr_cli.eval.psnr_ssim import psnr, ssim
    from tadsr_cli.eval.stlpips import MetricUnavailable, STLPIPSMetric

    gt = textured(size, size, seed=100)
    sr = cv2.GaussianBlur(gt, (0, 0), 1.0)
    model = load_pristine()
    fns: dict[str, object] = {
        "psnr_y": lambda: psnr(sr, gt),
        "ssim_y": lambda: ssim(sr, gt),
        "niqe": lambda: niqe(sr, model=model),
    }
    out: dict[str, float | str] = {}
    try:
        st = STLPIPSMetric(device=device)
        fns["st_lpips"] = lambda: st(sr, gt)
    except MetricUnavailable as exc:
        out["st_lpips"] = f"unavailable: {exc}"
    for name, fn in fns.items():
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="GT side in pixels (LQ = size / 4)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", action="store_true", help="also run the tiny random-weight model (1 step)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from tadsr_cli.base.devices import resolve_device
    from tadsr_cli.eval.report import write_report
    from tadsr_cli.eval.runner import EvalConfig, run_eval
    from tadsr_cli.pipeline.settings import ModelSettings

    device = resolve_device(args.device)
    result: dict[str, object] = {
        "benchmark": "eval",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": args.size,
        "images": args.images,
        "metric_seconds_per_image": time_metrics(args.size, args.repeat, str(device)),
    }
    with tempfile.TemporaryDirectory(prefix="tadsr-bench-eval-") as tmp:
        root = Path(tmp)
        make_set(root, args.images, args.size)
        models: list[str] = []
        if args.model:
            from tadsr_cli.models.checkpoints import save_model
            from tadsr_cli.models.presets import tiny_test_config
            from tadsr_cli.models.sr_model import DiffusionSR

            torch.manual_seed(0)
            models.append(str(save_model(DiffusionSR(tiny_test_config()), root / "tiny.safetensors")))
        cfg = EvalConfig(lq_dir=root / "lq", gt_dir=root / "gt", out_dir=root / "report", models=models,
                         steps=[1] if models else [], baselines=["bicubic", "lanczos"],
                         sr_dirs=[("blurred-gt", root / "sr")], engine=ModelSettings(device=str(device)))
        t0 = time.perf_counter()
        res = run_eval(cfg)
        t1 = time.perf_counter()
        write_report(res)
        t2 = time.perf_counter()
        result["run_eval_s"] = t1 - t0
        result["write_report_s"] = t2 - t1
        result["errors"] = len(res.errors)
        result["mean"] = {
            name: {k: v for k, v in row.items() if not k.endswith("_n")} for name, row in res.means().items()
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
