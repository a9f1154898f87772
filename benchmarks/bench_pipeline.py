"""Benchmark of the image pipeline (prints one JSON object; not a timed test).

* throughput of the torch engine on a 1024 x 1024 LQ input (tiny config, random weights): whole image as one
  tile vs the default tiling (128 px tiles, 16 px overlap, 4 tiles per batch);
* peak RSS of a fresh process that upscales a 960 x 540 PNG end to end (read, tile, blend, write).

    python benchmarks/bench_pipeline.py [--size 1024] [--device auto] [--precision fp32] [--skip-untiled]

Random weights: the numbers measure speed and memory only, never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _model():
    import torch

    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    return DiffusionSR(tiny_test_config()).eval()


def _rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: VmHWM from /proc (reset by exec; `ru_maxrss` is not, so a child started from a big parent would
    report the parent's peak). Elsewhere: `ru_maxrss`.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(size: int, device: str, precision: str, tile: int, overlap: int, batch: int,
               skip_untiled: bool) -> dict:
    import torch

    from tadsr_cli.engines import create_engine
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    model = _model()
    engine = create_engine("torch", model, device=device, precision=precision)
    rng = np.random.default_rng(0)
    img = rng.random((size, size, 3), dtype=np.float32)
    # warm-up (kernels, allocator)
    Upscaler(engine, TileOptions(tile=tile, overlap=overlap, batch=batch)).upscale(img[:tile, :tile])
    out: dict = {
        "device": str(engine.device),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "lq_size": [size, size],
        "out_size": [size * 4, size * 4],
    }
    runs = [("tiled", TileOptions(tile=tile, overlap=overlap, batch=batch))]
    if not skip_untiled:
        runs.append(("untiled", TileOptions(tile=0)))
    for label, opts in runs:
        up = Upscaler(engine, opts, seed=0)
        n_tiles = len(up.grid(size, size).tiles)
        _sync(engine.device)
        t0 = time.perf_counter()
        try:
            res = up.upscale(img)
        except Exception as exc:  # e.g. out of memory for the untiled run on a small machine
            out[label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        _sync(engine.device)
        dt = time.perf_counter() - t0
        out[label] = {
            "tile": opts.tile, "overlap": opts.overlap, "batch": opts.batch, "tiles": n_tiles,
            "final_tile": up.current_tile, "seconds": round(dt, 3),
            "lq_mpix_per_s": round(size * size / dt / 1e6, 4),
            "out_mpix_per_s": round(16 * size * size / dt / 1e6, 4),
        }
        del res
    # model-only: the same number of LQ pixels through engine.run in tile-sized batches, no tiler/blending
    m = engine.lq_multiple
    t = max(m, tile // m * m)
    lq = torch.rand(batch, 3, t, t) * 2 - 1
    nz = torch.randn(batch, engine.latent_channels, t, t)
    engine.run(lq, nz)
    calls = max(1, (size * size) // (batch * t * t))
    _sync(engine.device)
    t0 = time.perf_counter()
    for _ in range(calls):
        engine.run(lq, nz)
    _sync(engine.device)
    dt = time.perf_counter() - t0
    out["model_only"] = {"tile": t, "batch": batch, "calls": calls, "seconds": round(dt, 3),
                         "lq_mpix_per_s": round(calls * batch * t * t / dt / 1e6, 4)}
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    return out


def rss_child(width: int, height: int, device: str, precision: str) -> dict:
    """Runs in a fresh process: the whole image path on a width x height PNG."""
    from PIL import Image

    from tadsr_cli.engines import create_engine
    from tadsr_cli.pipeline.image_io import upscale_image
    from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        arr = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(src)
        del arr
        engine = create_engine("torch", _model(), device=device, precision=precision)
        up = Upscaler(engine, TileOptions())
        up.upscale(np.zeros((32, 32, 3), np.float32))  # warm-up
        before = _rss_mb()
        t0 = time.perf_counter()
        res = upscale_image(src, Path(tmp) / "out.png", up)
        dt = time.perf_counter() - t0
        out_bytes = (Path(tmp) / "out.png").stat().st_size
    return {"in_size": [width, height], "out_size": list(res.out_size), "seconds": round(dt, 3),
            "rss_after_model_load_mb": round(before, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "output_png_mb": round(out_bytes / 2**20, 2),
            "accumulator_mb": round(16 * width * height * 3 * 4 / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="LQ side for the throughput runs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--skip-untiled", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(960, 540, args.device, args.precision)))
        return
    result: dict = {"bench": "pipeline", "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if not args.skip_throughput:
        result["throughput"] = throughput(args.size, args.device, args.precision, args.tile, args.overlap,
                                          args.batch, args.skip_untiled)
    if not args.skip_rss:
        proc = subprocess.run([sys.executable, __file__, "--rss-child", "--device", args.device,
                               "--precision", args.precision], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            result["rss_960x540"] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            result["rss_960x540"] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
