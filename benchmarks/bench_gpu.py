"""GPU benchmark, ready to run in one go: 960x540 -> 3840x2160 frames per second through the real pipeline.

For each model (`default` = the shipped tiny model, `official` = the official ResShift/TAD-SR architecture with
random weights: speed and memory do not depend on the weights) and each engine (torch fp16, torch bf16, TensorRT
fp16 when `tensorrt` imports), frames go through `Upscaler` with the default tiling (`--tile auto`: the whole
frame when it fits the free GPU memory) and the global noise field, exactly as `tadsr upscale` runs video frames.
Prints one JSON object: fps, seconds per frame, the tile size chosen, peak CUDA memory and the PSNR of the first
frame against torch fp32 (a sanity check of the reduced precisions).

    python benchmarks/bench_gpu.py                                  # on a CUDA machine: everything, ~minutes
    python benchmarks/bench_gpu.py --models default --frames 20
    python benchmarks/bench_gpu.py --device cpu --models tiny --size 64x48 --frames 2 --precisions fp32,bf16
                                                                    # the CPU smoke run the tests use
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_model(name: str) -> Any:
    import torch

    from tadsr_cli.models.model_cache import resolve_model
    from tadsr_cli.models.presets import official_realsr_x4, tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    if name == "default":
        return resolve_model(None)
    torch.manual_seed(0)
    if name == "official":
        return DiffusionSR(official_realsr_x4()).eval()
    if name == "tiny":
        return DiffusionSR(tiny_test_config()).eval()
    raise SystemExit(f"unknown model {name!r} (default, official, tiny)")


def frame(width: int, height: int) -> np.ndarray:
    """A deterministic frame with structure at several scales (the content does not change the speed)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([np.sin(xx / 17.0 + c) * np.cos(yy / 11.0 - c) for c in range(3)], axis=-1) * 0.35 + 0.5
    img += np.random.default_rng(0).normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(1.0 / mse), 2)


def run_variant(model: Any, backend: str, precision: str, device: str, img: np.ndarray, frames: int,
                reference: np.ndarray | None) -> tuple[dict, np.ndarray | None]:
    import torch

    from tadsr_cli.engines import create_engine
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    cuda = device.startswith("cuda")
    try:
        opts: dict[str, Any] = {"tile": "auto", "batch": 1} if backend == "tensorrt" else {}
        engine = create_engine(backend, model, device=device, precision=precision, **opts)
    except Exception as exc:  # noqa: BLE001 - an unavailable variant is reported, the others still run
        return {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}, None
    up = Upscaler(engine, TileOptions(), seed=0)
    first = up.upscale(img)  # warm-up: kernels, cuDNN autotuning, TensorRT build, the memory probe
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(frames):
        up.upscale(img)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    row = {"backend": engine.name, "precision": precision, "frames": frames, "fps": round(frames / dt, 3),
           "seconds_per_frame": round(dt / frames, 4), "tile": up.current_tile,
           "psnr_vs_torch_fp32_db": None if reference is None else psnr(first, reference)}
    if cuda:
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row, first


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="default,official")
    ap.add_argument("--precisions", default="fp16,bf16", help="torch precisions to time (fp32 is the reference)")
    ap.add_argument("--no-tensorrt", action="store_true")
    ap.add_argument("--size", default="960x540", help="input frame WIDTHxHEIGHT (output is 4x)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; for a CPU smoke run pass --device cpu --models tiny --size 64x48")
    width, height = (int(v) for v in args.size.lower().split("x"))
    img = frame(width, height)
    report: dict = {"bench": "gpu", "python": platform.python_version(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
                    "in_size": [width, height], "out_size": [4 * width, 4 * height], "models": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = load_model(name)
        rows: dict = {}
        ref_row, reference = run_variant(model, "torch", "fp32", args.device, img, 1, None)
        rows["torch_fp32"] = ref_row
        for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
            if precision != "fp32":
                rows[f"torch_{precision}"] = run_variant(model, "torch", precision, args.device, img, args.frames,
                                                         reference)[0]
        if not args.no_tensorrt:
            rows["tensorrt_fp16"] = run_variant(model, "tensorrt", "fp16", args.device, img, args.frames,
                                                reference)[0]
        report["models"][name] = rows
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
